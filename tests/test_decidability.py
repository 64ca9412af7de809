"""benchmarks/decidability.py --summary-only rebuilds docs/decidability from the committed runs alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@pytest.mark.parametrize("folder", ["decidability", "decidability/encoders", "decidability/at-1000", "decidability/at-3000",
                                    "decidability/heads-at-1000"])
def test_summary_rebuilds_from_the_committed_runs(tmp_path, folder):
    COMMITTED = DOCS / folder
    command = json.loads((COMMITTED / "decidability.json").read_text())["command"]
    first_line = (COMMITTED / "decidability.md").read_text().splitlines()[0]
    assert command in first_line and "--summary-only" in command
    shutil.copytree(COMMITTED / "runs", tmp_path / "docs" / folder / "runs")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "decidability.py"), *command.split()[2:]],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rebuilt = json.loads((tmp_path / "docs" / folder / "decidability.json").read_text())
    committed = json.loads((COMMITTED / "decidability.json").read_text())
    # The measurements are rebuilt exactly (the parameters' file:line follow the phantom's source).
    assert rebuilt["runs"] == committed["runs"] and rebuilt["runs"]
    for run in rebuilt["runs"].values():
        assert len(run["per_observation"]) == 14 and 0.5 <= run["auroc_macro"] <= 1.0
