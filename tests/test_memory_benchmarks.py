"""The memory benchmarks keep working (benchmarks/memory_ratio.py, benchmarks/prepare_memory.py): run
at toy sizes, they print their tables. Their figures are not checked here (memory of a loaded
machine); docs/RESULTS.md keeps the measured ones and names the commands."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


class Benchmark:
    """A benchmark script at toy sizes, started at once: each is a chain of one-thread interpreters,
    so the module's two run side by side on two cores (memory figures do not depend on time)."""

    def __init__(self, name: str, *args: str, log: Path):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "OMP_NUM_THREADS": "1"}
        self.log = log
        with open(log, "w") as errors:  # a file, not a pipe: a full pipe would stall the script
            self.process = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / name), *args], env=env,
                                            stdout=subprocess.PIPE, stderr=errors, text=True)

    def output(self) -> str:
        stdout, _ = self.process.communicate(timeout=600)
        assert self.process.returncode == 0, self.log.read_text()[-3000:]
        return stdout


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory):
    logs = tmp_path_factory.mktemp("memory-benchmarks")
    started = {"prepare": Benchmark("prepare_memory.py", "--studies", "4", "12", "--image-size", "16",
                                    log=logs / "prepare.stderr"),
               "ratio": Benchmark("memory_ratio.py", "--tiny", "--llm-layers", "1", log=logs / "ratio.stderr")}
    yield started
    for benchmark in started.values():
        benchmark.process.kill()  # a no-op for a finished one; a failed test leaves none behind
        benchmark.process.wait()


def test_prepare_memory_prints_both_sizes_and_the_load_side(benchmarks):
    out = benchmarks["prepare"].output()
    assert "| | 4 studies | 12 studies | ratio last/first |" in out
    for row in ("`trrg prepare mimic` peak RSS", "`trrg prepare mimic`: anonymous", "`load_studies(folder)` peak RSS"):
        assert f"| {row}" in out, out


def test_memory_ratio_measures_every_step_of_the_model_path(benchmarks):
    out = benchmarks["ratio"].output()
    for step in ("baseline (imports only)", "init", "bridge", "export", "load"):
        assert f"| {step} |" in out, out
