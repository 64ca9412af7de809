"""``trrg export``: a hub-ready folder from a training checkpoint (LoRA merged, safetensors only).

    trrg export --checkpoint runs/stage2/checkpoint-400 --out models/trrg-phantom [--metrics runs/demo/metrics.json]

The folder holds the model, processor, remote code and a README made from MODEL_CARD.md with the
run's metrics, so `AutoModel.from_pretrained(folder, trust_remote_code=True)` works for anyone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import trrg

CARD_NAME = "MODEL_CARD.md"


def _model_card_template() -> str:
    checkout_card = Path(trrg.__file__).resolve().parents[2] / CARD_NAME  # present in a source checkout
    if checkout_card.is_file():
        return checkout_card.read_text(encoding="utf-8")
    return "---\nlicense: apache-2.0\nlibrary_name: transformers\npipeline_tag: image-text-to-text\ntags: [radiology, trrg]\n---\n\n# TRRG model\n\nSee the TRRG project's MODEL_CARD.md.\n"


def render_readme(metrics: dict | None, run_info: dict | None = None) -> str:
    """MODEL_CARD.md plus a section with this export's measured metrics (never the paper's)."""
    card = _model_card_template()
    if not metrics:
        return card
    rows = [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in metrics.items() if isinstance(v, (int, float, str)) and "/" not in k]
    section = ["", "## Metrics of this export", "",
               "Measured by `trrg evaluate` on the split and data named below; these are this model's numbers, not the paper's.", ""]
    if run_info:
        section += [f"- {k}: `{v}`" for k, v in run_info.items()] + [""]
    section += ["| metric | value |", "|---|---|", *rows, ""]
    return card.rstrip() + "\n" + "\n".join(section)


def export_hub_folder(model, processor, out: str | Path, metrics: dict | None = None, run_info: dict | None = None) -> Path:
    """Merge LoRA, save model + processor + remote code + README to ``out`` (written beside, then moved)."""
    from trrg.trainers.finetune import merge_lora
    from trrg.trainers.presets import save_hub_folder

    out = Path(out)
    staging = out.with_name(out.name + ".partial")
    model = merge_lora(model)
    save_hub_folder(model, processor, staging)
    (staging / "README.md").write_text(render_readme(metrics, run_info), encoding="utf-8")
    if out.exists():  # only replace an earlier export once the new one is complete
        backup = out.with_name(out.name + ".previous")
        _remove(backup)
        out.rename(backup)
        staging.rename(out)
        _remove(backup)
    else:
        staging.rename(out)
    return out


def _remove(path: Path) -> None:
    import shutil

    if path.exists():
        shutil.rmtree(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trrg export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a trrg finetune checkpoint-N/ or final/ folder")
    parser.add_argument("--out", required=True, help="hub folder to write")
    parser.add_argument("--metrics", help="metrics.json of `trrg evaluate` to put into the README")
    args = parser.parse_args(argv)
    from trrg.trainers.checkpoints import load_model_folder

    model, processor = _load_checkpoint(args.checkpoint, load_model_folder)
    metrics = json.loads(Path(args.metrics).read_text()) if args.metrics else None
    export_hub_folder(model, processor, args.out, metrics)
    print(f"exported {args.checkpoint} -> {args.out}")
    return 0


def _load_checkpoint(folder: str, load_model_folder):
    """A plain folder loads directly; a LoRA training checkpoint needs its adapters re-created first."""
    try:
        return load_model_folder(folder, expected="trrg")
    except (RuntimeError, ValueError) as error:
        if "lora" not in str(error).lower():
            raise
    raise SystemExit(f"{folder} holds LoRA weights: export it from the run (trrg finetune writes final/) "
                     "or rebuild the adapters with the same --lora_* arguments")
