"""Every measured table in docs/ is rebuilt from files in the repo by the command the doc prints.

Only the cheap, no-training modes run here: the ablation's --summary-only, results_tables.py and
pretrain_imbalance.py --from-json. Each command is taken from (or checked against) the doc itself.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = (DOCS / "RESULTS.md").read_text()


def _run(command: str, cwd: Path) -> str:
    """Run a documented `python benchmarks/...` command with this interpreter, from ``cwd``."""
    words = shlex.split(command)
    assert words[0] == "python" and words[1].startswith("benchmarks/"), command
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / words[1]), *words[2:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _pinned(package: str) -> str | None:
    match = re.search(rf"^{package}==(\S+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    return match.group(1) if match else None


def test_ablation_summary_rebuilds_its_docs_byte_for_byte(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    committed = DOCS / "ablation"
    command = json.loads((committed / "ablation.json").read_text())["protocol"]["command"]
    assert "--summary-only" in command and f"Command: `{command}`" in (committed / "ablation.md").read_text()
    assert command in RESULTS.replace("\n", " ")
    # the command names docs/ablation relative to the repo root: run it in a copy holding only the runs
    shutil.copytree(committed / "runs", tmp_path / "docs" / "ablation" / "runs")
    _run(command, tmp_path)
    rebuilt = tmp_path / "docs" / "ablation"
    for name in ("ablation.md", "ablation.json"):
        assert (rebuilt / name).read_bytes() == (committed / name).read_bytes(), name
    png = (rebuilt / "ablation.png").read_bytes()
    assert png.startswith(b"\x89PNG") and b"Software" not in png and b"Creation Time" not in png
    if matplotlib.__version__ == _pinned("matplotlib"):  # other versions may place a pixel differently
        assert png == (committed / "ablation.png").read_bytes()


@pytest.mark.parametrize("command", [
    "python benchmarks/results_tables.py goals",
    "python benchmarks/results_tables.py demo",
    "python benchmarks/results_tables.py userroute",
    "python benchmarks/results_tables.py views",
    "python benchmarks/pretrain_imbalance.py --from-json docs/pretrain_imbalance.json",
])
def test_results_tables_are_printed_by_the_command_under_them(command):
    assert f"`{command}`" in RESULTS.replace("\n", " ")
    table = _run(command, ROOT)
    assert table.count("\n|") >= 3 and table in RESULTS, table


def test_tables_without_committed_output_say_so():
    for heading in ("## Throughput", "## Clue count scaling"):
        section = " ".join(RESULTS.split(heading, 1)[1].split("\n## ", 1)[0].split())
        assert "**Measured, not regenerable from the repo**" in section and "Rerun with" in section, heading


def test_matplotlib_is_a_benchmark_dependency_only():
    library = ["modeling_trrg", "processing", "assembly", "trainers", "evaluation", "commands", "space", "src"]
    importers = [str(path.relative_to(ROOT)) for folder in library for path in (ROOT / folder).rglob("*.py")
                 if re.search(r"^\s*(import|from)\s+matplotlib", path.read_text(), re.MULTILINE)]
    assert importers == []


@pytest.mark.parametrize("folder", ["perception", "perception/timing", "perception/phantom-1.3",
                                    "perception/phantom-1.3-30ep", "perception/phantom-1.3-probes",
                                    "perception/phantom-1.3-60ep", "perception/phantom-1.3-3000studies",
                                    "perception/phantom-1.3-6000studies", "perception/phantom-1.3-augment-gap",
                                    "perception/phantom-1.3-3000studies-keyed", "perception/phantom-1.3-prompt-bank",
                                    "perception/phantom-1.3-first-view"])
def test_perception_summary_rebuilds_its_docs_byte_for_byte(tmp_path, folder):
    committed = DOCS / folder
    command = json.loads((committed / "perception.json").read_text())["command"]
    assert "--summary-only" in command and f"`{command}`" in (committed / "perception.md").read_text()
    assert command in RESULTS.replace("\n", " ")
    shutil.copytree(committed / "runs", tmp_path / "docs" / folder / "runs")
    _run(command, tmp_path)
    for name in ("perception.md", "perception.json"):
        assert (tmp_path / "docs" / folder / name).read_bytes() == (committed / name).read_bytes(), name


@pytest.mark.parametrize("folder", ["phantom-1.2", "demo-budget", "demo-budget-first-view"])
def test_ablation_reruns_summary_rebuilds_its_docs(tmp_path, folder):
    pytest.importorskip("matplotlib")
    committed = DOCS / "ablation" / folder
    command = json.loads((committed / "ablation.json").read_text())["protocol"]["command"]
    assert "--summary-only" in command and command in RESULTS.replace("\n", " ")
    shutil.copytree(committed / "runs", tmp_path / "docs" / "ablation" / folder / "runs")
    _run(command, tmp_path)
    for name in ("ablation.md", "ablation.json"):
        assert (tmp_path / "docs" / "ablation" / folder / name).read_bytes() == (committed / name).read_bytes()


@pytest.mark.parametrize("folder, stem", [("continued_finetune", "continued_finetune"), ("single_view", "single_view"),
                                          ("rendering_shift", "rendering_shift"), ("site_adaptation", "site_adaptation"),
                                          ("site_adaptation/phantom-1.3", "site_adaptation"),
                                          ("site_adaptation/phantom-1.3-full-test", "site_adaptation"),
                                          ("site_adaptation/phantom-1.3-unseen-calibration", "site_adaptation")])
def test_finetune_guide_tables_rebuild_byte_for_byte(tmp_path, folder, stem):
    """The continued-fine-tuning, one-view and rendering-shift tables (docs/FINETUNE_ON_YOUR_DATA.md, RESULTS.md)."""
    committed = DOCS / folder
    command = json.loads((committed / f"{stem}.json").read_text())["protocol"]["command"]
    assert "--summary-only" in command and f"`{command}`" in (committed / f"{stem}.md").read_text()
    assert command in RESULTS.replace("\n", " ")
    shutil.copytree(committed / "runs", tmp_path / "docs" / folder / "runs")
    _run(command, tmp_path)
    for name in (f"{stem}.md", f"{stem}.json"):
        assert (tmp_path / "docs" / folder / name).read_bytes() == (committed / name).read_bytes(), name


def test_evidence_maps_table_rebuilds_byte_for_byte(tmp_path):
    """The pointing game of the evidence and attribution maps (RESULTS.md, "Where the evidence lies")."""
    committed = DOCS / "evidence_maps"
    command = json.loads((committed / "evidence_maps.json").read_text())["command"]
    assert f"`{command}`" in (committed / "evidence_maps.md").read_text() and command in RESULTS.replace("\n", " ")
    shutil.copytree(committed / "runs", tmp_path / "docs" / "evidence_maps" / "runs")
    _run(command, tmp_path)
    for name in ("evidence_maps.md", "evidence_maps.json"):
        assert (tmp_path / "docs" / "evidence_maps" / name).read_bytes() == (committed / name).read_bytes(), name


def test_truthful_checks_table_rebuilds_byte_for_byte(tmp_path):
    """docs/truthful: the out-of-distribution flag and verified decoding, rebuilt from their JSON."""
    committed = DOCS / "truthful"
    command = (committed / "truthful_checks.md").read_text().splitlines()[0].removeprefix("Command: `").removesuffix("`")
    assert "--summary-only" in command and command in RESULTS.replace("\n", " ")
    (tmp_path / "docs" / "truthful").mkdir(parents=True)
    shutil.copy(committed / "truthful_checks.json", tmp_path / "docs" / "truthful")
    _run(command, tmp_path)
    assert (tmp_path / "docs" / "truthful" / "truthful_checks.md").read_bytes() == (committed / "truthful_checks.md").read_bytes()


def test_verified_decoding_table_rebuilds_byte_for_byte(tmp_path):
    """docs/verified_decoding: clue completion and the sentence check, measured (RESULTS.md)."""
    committed = DOCS / "verified_decoding"
    command = json.loads((committed / "verified_decoding.json").read_text())["command"]
    assert "--summary-only" in command and command in RESULTS.replace("\n", " ")
    shutil.copytree(committed / "runs", tmp_path / "docs" / "verified_decoding" / "runs")
    _run(command, tmp_path)
    for name in ("verified_decoding.md", "verified_decoding.json"):
        assert (tmp_path / "docs" / "verified_decoding" / name).read_bytes() == (committed / name).read_bytes(), name


def test_clue_threshold_tables_rebuild_from_their_runs(tmp_path):
    committed = DOCS / "clue_thresholds"
    command = "python benchmarks/clue_thresholds.py --summary-only --out docs/clue_thresholds"
    assert f"`{command}`" in (committed / "clue_thresholds.md").read_text() and command in RESULTS.replace("\n", " ")
    shutil.copytree(committed / "runs", tmp_path / "docs" / "clue_thresholds" / "runs")
    _run(command, tmp_path)
    assert (tmp_path / "docs" / "clue_thresholds" / "clue_thresholds.md").read_bytes() == \
        (committed / "clue_thresholds.md").read_bytes()
