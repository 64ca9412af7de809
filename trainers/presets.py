"""Model presets, the offline report tokenizer, and building/saving hub-ready TRRG folders.

``tiny``  trains on 2 CPU cores in minutes: a 4-stage ResNet (16-32-64-128) at 128 px, a 2-layer
          BERT text encoder and a 2-layer Llama, all from config, with a byte-level BPE tokenizer
          trained here on phantom report text.
``base``  names real backbones a user passes by path or hub id (nothing is downloaded here):
          a Swin-B image encoder, a clinical BERT text encoder and a 7B-class causal LM.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trrg.modeling.configuration_trrg import (
    DEFAULT_DISEASE_PROMPTS,
    TRRGClueConfig,
    TRRGConfig,
    TRRGContrastiveConfig,
)
from trrg.modeling.processing_trrg import DEFAULT_INSTRUCTION, DEFAULT_RESPONSE_PREFIX

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
IMAGE_TOKEN, CLUE_TOKEN = "<image>", "<clue>"


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
# does not set. tiny: measured on the phantom (2 CPU cores); Hugging Face's own defaults (lr 5e-5,
# batch 8, constant schedule) leave the tiny models writing one all-normal report for every study.
# base: the usual settings for a ViT/BERT-class encoder pair and LoRA on a 7B-class LLM (not
# measured here: no GPU).
RECIPES: dict[str, dict[int, dict]] = {
    "tiny": {
        1: {"learning_rate": 2e-3, "per_device_train_batch_size": 64, "per_device_eval_batch_size": 64,
            "num_train_epochs": 15, "warmup_steps": 20, "lr_scheduler_type": "cosine", "weight_decay": 0.01,
            "max_grad_norm": 1.0},
        # Batch 16: the LLM learns to write what a rare clue says from the number of steps, not the
        # batch size (oracle clues, same 8 epochs: batch 64 -> CE macro-F1 0.47, 32 -> 0.85, 16 -> 0.90).
        2: {"learning_rate": 2e-3, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 64,
            "num_train_epochs": 8, "warmup_steps": 20, "lr_scheduler_type": "cosine", "weight_decay": 0.01,
            "max_grad_norm": 1.0},
    },
    "base": {
        1: {"learning_rate": 1e-4, "per_device_train_batch_size": 32, "per_device_eval_batch_size": 32,
            "num_train_epochs": 10, "warmup_steps": 200, "lr_scheduler_type": "cosine", "weight_decay": 0.05,
            "max_grad_norm": 1.0},
        2: {"learning_rate": 2e-4, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 8,
            "num_train_epochs": 3, "warmup_steps": 100, "lr_scheduler_type": "cosine", "weight_decay": 0.0,
            "max_grad_norm": 1.0, "lora_r": 16},
    },
}


def recipe_argv(argv: list[str], stage: int) -> list[str]:
    """``argv`` with the preset's recipe in front, so that every flag the user gives wins (argparse
    keeps the last value). The preset is the one named by ``--preset`` or by ``--model`` (stage 1
    accepts a preset name there); ``tiny`` otherwise."""
    preset = "tiny"
    for flag in ("--model", "--preset"):
        value = _flag_value(argv, flag)
        if value in RECIPES:
            preset = value
    recipe = []
    for key, value in RECIPES[preset][stage].items():
        recipe += [f"--{key}", str(value)]
    return recipe + list(argv)


def _flag_value(argv: list[str], flag: str) -> str | None:
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


def phantom_report_corpus(num_reports: int = 3000, seed: int = 0) -> list[str]:
    """Report text from the phantom's report writer (no images rendered: fast)."""
    from trrg.processing.phantom_reports import sample_findings, write_report
    from trrg.processing.text import clean_report

    rng = np.random.default_rng(seed)
    return [clean_report(write_report(rng, sample_findings(rng))[0]) for _ in range(num_reports)]


def train_report_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained in-process (offline) on report text.

    Byte-level so that any text is encodable (no <unk> on real reports); trained on reports so the
    common words are single tokens and sequences stay short for a tiny LM.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    backend.decoder = decoders.ByteLevel()
    specials = list(SPECIAL_TOKENS.values()) + [IMAGE_TOKEN, CLUE_TOKEN]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = list(texts) + [p for pair in DEFAULT_DISEASE_PROMPTS.values() for p in pair]
    corpus += [DEFAULT_INSTRUCTION, DEFAULT_RESPONSE_PREFIX]
    backend.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, CLUE_TOKEN]})
    return tokenizer


def add_placeholder_tokens(tokenizer) -> int:
    """Give a pretrained LLM tokenizer the placeholders (and a pad token); returns how many were new."""
    added = tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, CLUE_TOKEN]})
    if tokenizer.pad_token is None:
        added += tokenizer.add_special_tokens({"pad_token": SPECIAL_TOKENS["pad_token"]})
    return added


# ---------------------------------------------------------------------------------------------
# Configs and processors
# ---------------------------------------------------------------------------------------------


def check_pretrained_source(spec: str, name: str) -> str:
    """A local folder, or something shaped like a hub id ("org/name"); anything else is a typo'd path."""
    import re

    if Path(spec).expanduser().exists():
        return str(Path(spec).expanduser())
    if re.fullmatch(r"[\w.-]+/[\w.-]+", spec) and not spec.startswith((".", "/")):
        return spec
    raise FileNotFoundError(f"--{name} {spec}: no such folder (and not a hub id of the form org/name); "
                            "pass the folder of a downloaded model")


def _config_of(spec: dict | str, name: str, **overrides):
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


def contrastive_config(preset: Preset, tokenizer, vision: str | None = None, text: str | None = None) -> TRRGContrastiveConfig:
    text_overrides = {"vocab_size": len(tokenizer)} if isinstance(text or preset.text, dict) else {}
    vision_config = _config_of(vision or preset.vision, "vision")
    return TRRGContrastiveConfig(
        vision_config=vision_config,
        text_config=_config_of(text or preset.text, "text", **text_overrides),
        projection_dim=preset.projection_dim,
        image_size=image_size_for(vision_config, preset.image_size),
    )


def generation_config(
    preset: Preset, tokenizer, vision_config=None, llm: str | None = None, clue: dict | None = None
) -> TRRGConfig:
    llm_spec = llm or preset.llm
    vision_config = vision_config if vision_config is not None else _config_of(preset.vision, "vision")
    overrides = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                 "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    return TRRGConfig(
        vision_config=vision_config,
        text_config=_config_of(llm_spec, "llm", **(overrides if isinstance(llm_spec, dict) else {})),
        clue_config=TRRGClueConfig(**{**preset.clue, **(clue or {})}),
        projection_dim=preset.projection_dim,
        image_token_grid=preset.image_token_grid,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        clue_token_id=tokenizer.convert_tokens_to_ids(CLUE_TOKEN),
        image_size=image_size_for(vision_config, preset.image_size),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def build_processor(tokenizer, config: TRRGConfig | TRRGContrastiveConfig):
    from trrg.modeling.image_processing_trrg import TRRGImageProcessor
    from trrg.modeling.processing_trrg import TRRGProcessor

    image_processor = TRRGImageProcessor(image_size=config.image_size, max_views=getattr(config, "max_views", 2))
    if isinstance(config, TRRGConfig):
        grid = config.image_token_grid
        return TRRGProcessor(image_processor, tokenizer, num_image_tokens_per_view=grid * grid,
                             num_clue_tokens=config.num_clue_tokens)
    return TRRGProcessor(image_processor, tokenizer, num_image_tokens_per_view=0, num_clue_tokens=0)


def generation_defaults(model, max_new_tokens: int = 96) -> None:
    """Greedy decoding that stops at </s>; the model's generation_config is saved with it."""
    generation = model.generation_config
    generation.max_new_tokens = max_new_tokens
    generation.do_sample = False
    generation.num_beams = 1
    generation.pad_token_id = model.config.pad_token_id
    generation.bos_token_id = model.config.bos_token_id
    generation.eos_token_id = model.config.eos_token_id


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
