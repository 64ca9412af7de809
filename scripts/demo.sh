#!/usr/bin/env bash
# Set up .venv (if needed) and run the main job: phantom data -> stage 1 -> stage 2 -> metrics.
# Extra arguments go to `trrg demo` (default: --out runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ "$#" -eq 0 ]; then
  set -- --out runs/demo
fi
exec .venv/bin/trrg demo "$@"
