"""``trrg export``: a hub-ready folder from a training checkpoint (LoRA merged, safetensors only).

    trrg export --checkpoint runs/finetune/checkpoint-400 --out models/trrg-phantom [--metrics runs/demo/metrics.json]

The folder holds the model, processor, remote code and a README made from MODEL_CARD.md with the
run's metrics, so `AutoModel.from_pretrained(folder, trust_remote_code=True)` works for anyone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trrg.assembly.hub_folders import export_hub_folder, load_model_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trrg export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a trrg finetune checkpoint-N/ or final/ folder")
    parser.add_argument("--out", required=True, help="hub folder to write")
    parser.add_argument("--metrics", help="metrics.json of `trrg evaluate` to put into the README")
    args = parser.parse_args(argv)
    model, processor = _load_checkpoint(args.checkpoint)
    metrics = json.loads(Path(args.metrics).read_text()) if args.metrics else None
    export_hub_folder(model, processor, args.out, metrics)
    print(f"exported {args.checkpoint} -> {args.out}")
    return 0


def _load_checkpoint(folder: str):
    """A plain folder loads directly; a LoRA training checkpoint needs its adapters re-created first."""
    try:
        return load_model_folder(folder, expected="trrg")
    except (RuntimeError, ValueError) as error:
        if "lora" not in str(error).lower():
            raise
    raise SystemExit(f"{folder} holds LoRA weights: export it from the run (trrg finetune writes final/) "
                     "or rebuild the adapters with the same --lora_* arguments")
