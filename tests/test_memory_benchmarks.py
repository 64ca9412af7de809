"""The memory benchmarks keep working (benchmarks/memory_ratio.py, benchmarks/prepare_memory.py): run
at toy sizes, they print their tables. Their figures are not checked here (memory of a loaded
machine); docs/RESULTS.md keeps the measured ones and names the commands."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(name: str, *args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_prepare_memory_prints_both_sizes_and_the_load_side():
    out = run_benchmark("prepare_memory.py", "--studies", "4", "12", "--image-size", "16")
    assert "| | 4 studies | 12 studies | ratio last/first |" in out
    for row in ("`trrg prepare mimic` peak RSS", "`trrg prepare mimic`: anonymous", "`load_studies(folder)` peak RSS"):
        assert f"| {row}" in out, out


@pytest.mark.slow
def test_memory_ratio_measures_every_step_of_the_model_path():
    out = run_benchmark("memory_ratio.py", "--tiny", "--llm-layers", "1")
    for step in ("baseline (imports only)", "init", "bridge", "export", "load"):
        assert f"| {step} |" in out, out
