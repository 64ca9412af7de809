#!/usr/bin/env bash
# Does TRRG work with the newest versions pyproject.toml's ranges allow, i.e. what `pip install trrg`
# picks today, not the locked set of constraints.txt? Creates a second venv, installs torch 2.13.0
# (the CPU wheel) first, then the package WITHOUT constraints.txt, prints what was resolved, and runs
# the fast tests and the remote-code load tests against it. Not part of the default suite: it
# installs from PyPI (minutes). Exit status: the tests'.
#
#   bash scripts/check_newest_versions.sh [VENV]      (default /tmp/trrg-newest; reused when present)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/trrg-newest}
PYTHON=${PYTHON:-python3}
# torch stays at the version the lock names: an unpinned torch downloads a multi-GB CUDA build.
TORCH=$(grep -E '^torch==' constraints.txt)
"$PYTHON" -m venv "$VENV"
pin=$(mktemp)
trap 'rm -f "$pin"' EXIT
echo "$TORCH" > "$pin"
log="$VENV/install.log"  # pip's and the build backend's chatter; shown when an install fails
pip_install() { "$VENV/bin/python" -m pip install --quiet "$@" >>"$log" 2>&1 || { tail -n 40 "$log"; exit 1; }; }
: > "$log"
pip_install --upgrade pip setuptools wheel
pip_install "$TORCH"
# The newest of everything else the ranges allow (eager: upgrade what an earlier run installed too);
# torch kept by the one-line constraints file.
pip_install --upgrade --upgrade-strategy eager -c "$pin" -e ".[test]"
"$VENV/bin/python" -m pip check
"$VENV/bin/python" - <<'EOF'
import re
from importlib.metadata import version
from pathlib import Path

locked = dict(re.findall(r"^([\w.-]+)==(\S+)$", Path("constraints.txt").read_text(), re.MULTILINE))
names = ["torch", "transformers", "peft", "datasets", "accelerate", "gradio", "gradio_client", "huggingface_hub",
         "tokenizers", "safetensors", "evaluate", "numpy", "pillow", "pydicom"]
print(f"  {'package':16s} {'newest allowed':16s} locked (constraints.txt)")
for name in names:
    newest, lock = version(name), locked.get(name, "?")
    print(f"  {name:16s} {newest:16s} {lock}" + ("" if newest.split("+")[0] == lock else "   <- newer"))
EOF
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# First the remote-code loads (saved folders loaded in fresh interpreters where trrg is not importable:
# what a newer transformers breaks first), then the rest of the fast tests.
# (pyproject's addopts already make pytest quiet: one -q more would drop its "N passed" line)
"$VENV/bin/python" -m pytest tests/test_hub_roundtrip.py -x
"$VENV/bin/python" -m pytest tests -m "not slow and not browser" -x --ignore tests/test_hub_roundtrip.py
echo "newest versions: the fast tests and the remote-code loads pass"
