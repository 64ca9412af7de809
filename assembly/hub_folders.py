"""TRRG model folders: loading one by kind with a clear error, saving one (safetensors only, remote
code included), and exporting a hub-ready folder with LoRA merged and a model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import trrg

# model_type of each stage's folder -> what it is, for error messages
KINDS = {"trrg": "a finetune-stage (stage 2, report generation) folder",
         "trrg_contrastive": "a pretrain-stage (stage 1, contrastive) folder"}


def model_kind(folder: str | Path) -> str:
    config = Path(folder) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"{folder} has no config.json: pass a folder written by `trrg init`, `trrg pretrain` or `trrg finetune` "
            "(a run's final/ or checkpoint-N/ folder)"
        )
    try:
        return json.loads(config.read_text()).get("model_type", "unknown")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise ValueError(f"{config}: not a readable model config ({error}); the folder is damaged or not a TRRG "
                         "model folder") from None


def load_model_folder(folder: str | Path, expected: str):
    """Model + processor of a TRRG folder, checking it is the expected stage."""
    from trrg.modeling import register_auto_classes
    from transformers import AutoModel, AutoProcessor

    register_auto_classes()
    kind = model_kind(folder)
    if kind != expected:
        found = KINDS.get(kind, f"a {kind!r} model")
        raise ValueError(f"{folder} is {found}, but {KINDS[expected]} is needed here: check the path "
                         "(stage 1 comes from `trrg pretrain`, stage 2 from `trrg bridge`/`trrg finetune`)")
    return AutoModel.from_pretrained(folder), AutoProcessor.from_pretrained(folder)


def save_hub_folder(model, processor, out_dir: str | Path) -> Path:
    """Write model (safetensors only) + processor + remote code to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    leftovers = sorted(p.name for p in out.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".pkl"})
    if leftovers:
        raise RuntimeError(f"pickle files appeared in {out}: {leftovers}; TRRG folders must hold safetensors only")
    return out


def merge_lora(model):
    """Fold LoRA weights back into plain modules (for export: standard weight names)."""
    from peft import PeftModel

    if isinstance(model.language_model, PeftModel):
        model.language_model = model.language_model.merge_and_unload()
    if isinstance(model.vision_model.backbone, PeftModel):
        model.vision_model.backbone = model.vision_model.backbone.merge_and_unload()
    return model


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
    # "model" is where the evaluated checkpoint lay on the evaluating machine: a local path, which may name
    # a hospital, and the card belongs to the model itself.
    rows = [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in metrics.items() if isinstance(v, (int, float, str)) and "/" not in k and k != "model"]
    section = ["", "## Metrics of this export", "",
               "Measured by `trrg evaluate` on the split and data named below; these are this model's numbers, not the paper's.", ""]
    if run_info:
        section += [f"- {k}: `{v}`" for k, v in run_info.items()] + [""]
    section += ["| metric | value |", "|---|---|", *rows, ""]
    return card.rstrip() + "\n" + "\n".join(section)


def export_hub_folder(model, processor, out: str | Path, metrics: dict | None = None, run_info: dict | None = None) -> Path:
    """Merge LoRA, save model + processor + remote code + README to ``out`` (written beside, then moved)."""
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
    if path.exists():
        shutil.rmtree(path)
