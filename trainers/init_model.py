"""``trrg init``: write a hub-ready, randomly initialised TRRG folder (model + processor + remote code).

    trrg init --preset tiny --out models/trrg-tiny               # stage 2, all from config
    trrg init --preset tiny --stage 1 --out models/trrg-tiny-s1  # stage 1 (contrastive)
    trrg init --preset base --vision /models/swin-b --llm /models/llama-7b --out models/trrg-base

With ``--vision/--text/--llm`` pointing at real models, their pretrained weights are loaded into the
backbones; everything TRRG adds (projections, clue modules) starts random.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trrg.trainers.presets import (
    PRESETS,
    add_placeholder_tokens,
    build_processor,
    contrastive_config,
    generation_config,
    generation_defaults,
    phantom_report_corpus,
    save_hub_folder,
    train_report_tokenizer,
)


def _tokenizer_for(spec, vocab_size: int, corpus_size: int):
    """A real LLM/text encoder brings its own tokenizer; a preset built from config gets one trained here."""
    if isinstance(spec, str):
        from transformers import AutoTokenizer

        from trrg.trainers.presets import check_pretrained_source

        tokenizer = AutoTokenizer.from_pretrained(check_pretrained_source(spec, "llm/--text"))
        add_placeholder_tokens(tokenizer)
        return tokenizer
    return train_report_tokenizer(phantom_report_corpus(corpus_size), vocab_size=vocab_size)


def build_contrastive(preset_name: str = "tiny", vision: str | None = None, text: str | None = None,
                      vocab_size: int = 1024, corpus_size: int = 3000, seed: int = 0):
    """A stage-1 model and processor; real backbones' weights are loaded when paths are given."""
    import torch
    from transformers import AutoModel

    from trrg.modeling.modeling_trrg import TRRGContrastiveModel

    preset = PRESETS[preset_name]
    tokenizer = _tokenizer_for(text or preset.text, vocab_size, corpus_size)
    config = contrastive_config(preset, tokenizer, vision=vision, text=text)
    torch.manual_seed(seed)
    model = TRRGContrastiveModel(config)
    if isinstance(vision or preset.vision, str):
        model.vision_model.backbone = AutoModel.from_pretrained(vision or preset.vision)
    if isinstance(text or preset.text, str):
        model.text_model = AutoModel.from_pretrained(text or preset.text)
        model.text_model.resize_token_embeddings(len(tokenizer))
    return model, build_processor(tokenizer, config)


def build_generator(preset_name: str = "tiny", vision: str | None = None, llm: str | None = None,
                    tokenizer=None, clue: dict | None = None, vocab_size: int = 1024, corpus_size: int = 3000,
                    seed: int = 0, vision_config=None, image_size: int | None = None,
                    projection_dim: int | None = None):
    """A stage-2 model and processor (random clue modules; an all-zero prompt bank until the bridge).

    ``vision_config`` / ``image_size`` / ``projection_dim`` override the preset (the bridge passes
    the stage-1 model's, so its weights fit).
    """
    import dataclasses

    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    from trrg.modeling.modeling_trrg import TRRGForConditionalGeneration
    from trrg.trainers.presets import _config_of

    preset = PRESETS[preset_name]
    overrides = {"image_size": image_size, "projection_dim": projection_dim}
    preset = dataclasses.replace(preset, **{k: v for k, v in overrides.items() if v is not None})
    llm_spec = llm or preset.llm
    tokenizer = tokenizer or _tokenizer_for(llm_spec, vocab_size, corpus_size)
    pretrained_vision = vision_config is None and isinstance(vision or preset.vision, str)
    vision_config = vision_config or _config_of(vision or preset.vision, "vision")
    config = generation_config(preset, tokenizer, vision_config=vision_config, llm=llm, clue=clue)
    torch.manual_seed(seed)
    model = TRRGForConditionalGeneration(config)
    if pretrained_vision:
        model.vision_model.backbone = AutoModel.from_pretrained(vision or preset.vision)
    _pair_shared_init(model, seed)
    if isinstance(llm_spec, str):
        model.language_model = AutoModelForCausalLM.from_pretrained(llm_spec)
        model.language_model.resize_token_embeddings(len(tokenizer))
        model.config.text_config = model.language_model.config
        model.clue_injector.match_word_embedding_scale(model.get_input_embeddings().weight)
    generation_defaults(model)
    return model, build_processor(tokenizer, config)


def _pair_shared_init(model, seed: int) -> None:
    """Give the visual path the same initial weights whichever clue modules are switched on, so
    that ablation arms with one seed differ only in what they switch (the LLM and the vision encoder
    are built before any optional module and are paired already)."""
    import torch

    for offset, name in enumerate(("visual_adapter", "multi_modal_projector")):
        torch.manual_seed(seed * 1000 + offset + 1)
        for module in getattr(model, name).modules():
            model._init_weights(module)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trrg init", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="model size preset (default: tiny)")
    parser.add_argument("--stage", type=int, choices=[1, 2], default=2, help="1: contrastive model, 2: report generator")
    parser.add_argument("--out", required=True, help="folder to write (must be empty or absent)")
    parser.add_argument("--vision", help="vision backbone path or hub id (overrides the preset)")
    parser.add_argument("--text", help="stage-1 text encoder path or hub id (overrides the preset)")
    parser.add_argument("--llm", help="causal LM path or hub id (overrides the preset)")
    parser.add_argument("--vocab-size", type=int, default=1024, help="size of the tokenizer trained for config-built presets")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"trrg init: {out} is not empty; choose a new --out folder (nothing was overwritten)")
    if args.stage == 1:
        model, processor = build_contrastive(args.preset, args.vision, args.text, args.vocab_size, seed=args.seed)
    else:
        model, processor = build_generator(args.preset, args.vision, args.llm, vocab_size=args.vocab_size, seed=args.seed)
    save_hub_folder(model, processor, out)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {type(model).__name__} ({params / 1e6:.2f} M parameters) and its processor to {out}")
    return 0
