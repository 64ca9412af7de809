"""Model presets (backbone sizes) and their training recipes.

``tiny``  trains on 2 CPU cores in minutes: a 4-stage ResNet (16-32-64-128) at 128 px, a 2-layer
          BERT text encoder and a 2-layer Llama, all from config, with a byte-level BPE tokenizer
          trained here on phantom report text.
``base``  names real backbones a user passes by path or hub id (nothing is downloaded here):
          a Swin-B image encoder, a clinical BERT text encoder and a 7B-class causal LM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Preset:
    """Backbones of a preset: dicts are configs built here, strings are paths / hub ids."""

    vision: dict | str
    text: dict | str
    llm: dict | str
    image_size: int
    image_token_grid: int | None
    projection_dim: int
    clue: dict = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        # A ResNet with BatchNorm learned the phantom's findings far better on a CPU budget than a
        # ConvNeXt (LayerNorm) of the same widths: stage-1 zero-shot macro AUROC 0.75 vs 0.68 after
        # 8 epochs on 1,000 studies (support devices 1.00 vs 0.65).
        vision={"model_type": "resnet", "embedding_size": 16, "hidden_sizes": [16, 32, 64, 128],
                "depths": [1, 1, 1, 1], "layer_type": "basic", "num_channels": 3},
        text={"model_type": "bert", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 256, "max_position_embeddings": 64,
              # No dropout in the tiny models: runs are then exactly reproducible across process
              # layouts (the 1-vs-2-process test) and tiny models on phantom data do not need it.
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
        llm={"model_type": "llama", "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 256,
             "tie_word_embeddings": True},
        image_size=128,
        image_token_grid=4,
        projection_dim=128,
        clue={"hidden_size": 128, "num_layers": 1, "num_heads": 4},
    ),
    # Real backbones (pass your local paths or hub ids with --vision/--text/--llm):
    "base": Preset(
        vision="microsoft/swin-base-patch4-window7-224",
        text="emilyalsentzer/Bio_ClinicalBERT",
        llm="meta-llama/Llama-2-7b-hf",
        image_size=224,
        image_token_grid=7,
        projection_dim=512,
        clue={"hidden_size": 1024, "num_layers": 2, "num_heads": 8},
    ),
}


# Training recipes: what `trrg pretrain` / `trrg finetune` use for every option the command line
# does not set ("continue": `trrg finetune` on a model that was already fine-tuned). tiny: measured on the phantom (2 CPU cores); Hugging Face's own defaults (lr 5e-5,
# batch 8, constant schedule) leave the tiny models writing one all-normal report for every study.
# base: the usual settings for a ViT/BERT-class encoder pair and LoRA on a 7B-class LLM (not
# measured here: no GPU).
RECIPES: dict[str, dict[str, dict]] = {
    "tiny": {
        # 30 epochs: stage 1 at 10 epochs was under-trained (zero-shot AUROC macro 0.791 on 1,000 phantom-1.3
        # studies; 0.904 at 30, docs/perception/phantom-1.3-30ep). Batch 32: twice the steps of batch 64 raised
        # it on every seed (0.904 -> 0.921; batch 16: 0.918; half the rate at batch 64: 0.850;
        # docs/perception/phantom-1.3-probes).
        "pretrain": {"learning_rate": 2e-3, "per_device_train_batch_size": 32, "per_device_eval_batch_size": 64,
            "num_train_epochs": 30, "warmup_steps": 20, "lr_scheduler_type": "cosine", "weight_decay": 0.01,
            "max_grad_norm": 1.0},
        # Batch 16: the LLM learns to write what a rare clue says from the number of steps, not the
        # batch size (oracle clues, same 8 epochs: batch 64 -> CE macro-F1 0.47, 32 -> 0.85, 16 -> 0.90).
        "finetune": {"learning_rate": 2e-3, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 64,
            "num_train_epochs": 8, "warmup_steps": 20, "lr_scheduler_type": "cosine", "weight_decay": 0.01,
            "max_grad_norm": 1.0},
        # Continuing from a model that was already fine-tuned (its config names what it was trained on),
        # e.g. a released model on a hospital's few hundred studies (docs/continued_finetune, 3 seeds, CE
        # macro-F1 0.705 before): every rate tried lowered CE; 5e-6 least (0.686) while adapting the
        # style (BLEU-4 0.316 -> 0.325); 5e-5 wrote 10x more unsupported findings (0.013 -> 0.152), the
        # finetune recipe's 2e-3 cost 0.15. Thresholds tuned on 200 studies were worse than the model's
        # own (perception macro-F1 0.703 vs 0.715): kept.
        # Warm-up as a share of the steps: a site's few hundred studies make ~20 steps an epoch, and a
        # count of 20 spent nearly the whole run warming up.
        "continue": {"learning_rate": 5e-6, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 64,
            "num_train_epochs": 5, "warmup_steps": 0.1, "lr_scheduler_type": "cosine", "weight_decay": 0.01,
            "calibrate_clue_thresholds": False,
            "max_grad_norm": 1.0},
        # A new site the model reads badly (docs/site_adaptation): --adapt_perception trains the perception
        # alone under its prompt loss, at stage 1's scale of rate (the writer is frozen), averages it half
        # and half with the weights it started from (the adapted weights alone forgot the original
        # rendering: 0.69 -> 0.33 CE macro-F1; averaged, with --replay_data, 0.68), then re-tunes the
        # clue thresholds.
        "adapt": {"learning_rate": 5e-4, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 64,
            "num_train_epochs": 6, "warmup_steps": 0.1, "lr_scheduler_type": "cosine", "weight_decay": 0.01,
            "max_grad_norm": 1.0, "adapted_perception_weight": 0.5},
    },
    "base": {
        "pretrain": {"learning_rate": 1e-4, "per_device_train_batch_size": 32, "per_device_eval_batch_size": 32,
            "num_train_epochs": 10, "warmup_steps": 200, "lr_scheduler_type": "cosine", "weight_decay": 0.05,
            "max_grad_norm": 1.0},
        "finetune": {"learning_rate": 2e-4, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 8,
            "num_train_epochs": 3, "warmup_steps": 100, "lr_scheduler_type": "cosine", "weight_decay": 0.0,
            "max_grad_norm": 1.0, "lora_r": 16},
        # Not measured (no GPU): the finetune recipe's rate divided by 10 (LoRA adapters want more than the
        # tiny preset's full fine-tuning), the model's own thresholds kept as measured on tiny.
        "continue": {"learning_rate": 2e-5, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 8,
            "num_train_epochs": 2, "warmup_steps": 0.1, "lr_scheduler_type": "cosine", "weight_decay": 0.0,
            "calibrate_clue_thresholds": False, "max_grad_norm": 1.0, "lora_r": 16},
        # Not measured (no GPU): a tenth of the tiny rate, the usual scale for a pretrained ViT/Swin.
        "adapt": {"learning_rate": 5e-5, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 16,
            "num_train_epochs": 5, "warmup_steps": 0.1, "lr_scheduler_type": "cosine", "weight_decay": 0.05,
            "max_grad_norm": 1.0, "adapted_perception_weight": 0.5},
    },
}



def recipe_options(preset: str, stage: str) -> dict:
    """The options of ``preset``'s recipe for ``stage`` ("pretrain", "finetune" or "continue"): what
    ``trrg pretrain``/``trrg finetune`` and ``TRRG*Arguments.from_recipe`` use for every option not given."""
    if preset not in RECIPES:
        raise ValueError(f"unknown preset {preset!r}: one of {sorted(RECIPES)}")
    if stage not in RECIPES[preset]:
        raise ValueError(f"unknown recipe stage {stage!r}: one of {sorted(RECIPES[preset])}")
    return dict(RECIPES[preset][stage])


# ---------------------------------------------------------------------------------------------
# Backbones by config, path or hub id
# ---------------------------------------------------------------------------------------------


def check_pretrained_source(spec: str, name: str) -> str:
    """A local folder, or something shaped like a hub id ("org/name"); anything else is a typo'd path."""
    if Path(spec).expanduser().exists():
        return str(Path(spec).expanduser())
    if re.fullmatch(r"[\w.-]+/[\w.-]+", spec) and not spec.startswith((".", "/")):
        return spec
    raise FileNotFoundError(f"--{name} {spec}: no such folder (and not a hub id of the form org/name); "
                            "pass the folder of a downloaded model")


def config_of(spec: dict | str, name: str, **overrides):
    """A backbone config: built from a preset dict, or read from a local folder / cached hub id
    (``name`` is the command-line flag it came from, for the error message)."""
    from transformers import AutoConfig

    if isinstance(spec, dict):
        spec = dict(spec)
        return AutoConfig.for_model(spec.pop("model_type"), **{**spec, **overrides})
    spec = check_pretrained_source(spec, name)
    try:
        config = AutoConfig.from_pretrained(spec)
    except OSError as error:
        raise FileNotFoundError(
            f"--{name} {spec!r} is neither a local folder with a config.json nor a hub id in the local cache: "
            "pass the path of a downloaded model (nothing can be downloaded here)"
        ) from error
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def image_size_for(vision_config, default: int) -> int:
    """A backbone with a fixed input size (ViT, Swin) dictates it; convolutional ones take any."""
    size = getattr(vision_config, "image_size", None)
    if isinstance(size, (list, tuple)):
        size = size[0]
    return int(size) if size else default
