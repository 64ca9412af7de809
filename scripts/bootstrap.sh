#!/usr/bin/env bash
# Create .venv in the checkout and install TRRG (editable) with its test and benchmark extras (the latter
# so that a fresh clone can regenerate docs/: benchmarks/ draws its charts with matplotlib), at the exact versions
# the test suite passed with (constraints.txt); pyproject.toml itself states only ranges.
# Idempotent: re-runs only when pyproject.toml or constraints.txt changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "TRRG needs Python >= 3.11 (transformers 5)"'
stamp=.venv/.trrg-installed
want=$(sha256sum pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# the installer at its locked versions too, so every fresh clone builds the editable install the same way
.venv/bin/python -m pip install --quiet -c constraints.txt pip setuptools wheel
# torch first, at the locked version (torch==2.13.0, a CPU wheel here): installing peft/accelerate
# without torch present, or an unconstrained torch, pulls a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet -c constraints.txt torch
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test,benchmarks]"
echo "$want" > "$stamp"
