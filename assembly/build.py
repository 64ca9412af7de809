"""Building TRRG models from presets: configs, processors and randomly initialised models of both
stages (real backbones' weights are loaded when a preset names paths or hub ids)."""

from __future__ import annotations

from trrg.assembly.presets import PRESETS, Preset, check_pretrained_source, config_of, image_size_for
from trrg.assembly.report_tokenizer import (
    CLUE_TOKEN,
    IMAGE_TOKEN,
    add_placeholder_tokens,
    phantom_report_corpus,
    train_report_tokenizer,
)
from trrg.modeling.configuration_trrg import TRRGClueConfig, TRRGConfig, TRRGContrastiveConfig


def pretrain_config(preset: Preset, tokenizer, vision: str | None = None, text: str | None = None) -> TRRGContrastiveConfig:
    text_overrides = {"vocab_size": len(tokenizer)} if isinstance(text or preset.text, dict) else {}
    vision_config = config_of(vision or preset.vision, "vision")
    text_config = config_of(text or preset.text, "text", **text_overrides)
    # The tokenizer's special ids on the text config, which the Trainer compares with the tokenizer's.
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if getattr(tokenizer, name, None) is not None:
            setattr(text_config, name, getattr(tokenizer, name))
    return TRRGContrastiveConfig(
        vision_config=vision_config,
        text_config=text_config,
        projection_dim=preset.projection_dim,
        image_size=image_size_for(vision_config, preset.image_size),
    )


def finetune_config(
    preset: Preset, tokenizer, vision_config=None, llm: str | None = None, clue: dict | None = None
) -> TRRGConfig:
    llm_spec = llm or preset.llm
    vision_config = vision_config if vision_config is not None else config_of(preset.vision, "vision")
    overrides = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                 "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    return TRRGConfig(
        vision_config=vision_config,
        text_config=config_of(llm_spec, "llm", **(overrides if isinstance(llm_spec, dict) else {})),
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


def set_generation_defaults(model, max_new_tokens: int = 96) -> None:
    """Greedy decoding that stops at </s>; the model's generation_config is saved with it."""
    generation = model.generation_config
    generation.max_new_tokens = max_new_tokens
    generation.do_sample = False
    generation.num_beams = 1
    generation.pad_token_id = model.config.pad_token_id
    generation.bos_token_id = model.config.bos_token_id
    generation.eos_token_id = model.config.eos_token_id



def _tokenizer_for(spec, vocab_size: int, corpus_size: int):
    """A real LLM/text encoder brings its own tokenizer; a preset built from config gets one trained here."""
    if isinstance(spec, str):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(check_pretrained_source(spec, "llm/--text"))
        add_placeholder_tokens(tokenizer)
        return tokenizer
    return train_report_tokenizer(phantom_report_corpus(corpus_size), vocab_size=vocab_size)


def build_pretrain_model(preset_name: str = "tiny", vision: str | None = None, text: str | None = None,
                      vocab_size: int = 1024, corpus_size: int = 3000, seed: int = 0):
    """A pretrain-stage (stage 1) model and processor; real backbones' weights are loaded when paths are given."""
    import torch
    from transformers import AutoModel

    from trrg.modeling.modeling_trrg import TRRGContrastiveModel

    preset = PRESETS[preset_name]
    tokenizer = _tokenizer_for(text or preset.text, vocab_size, corpus_size)
    config = pretrain_config(preset, tokenizer, vision=vision, text=text)
    torch.manual_seed(seed)
    model = TRRGContrastiveModel(config)
    if isinstance(vision or preset.vision, str):
        _load_pretrained_backbone(model, "perception.vision_model.backbone", "vision_config", AutoModel,
                                  vision or preset.vision)
    if isinstance(text or preset.text, str):
        _load_pretrained_backbone(model, "text_model", "text_config", AutoModel, text or preset.text, tokenizer)
    return model, build_processor(tokenizer, config)


def build_finetune_model(preset_name: str = "tiny", vision: str | None = None, llm: str | None = None,
                    tokenizer=None, clue: dict | None = None, vocab_size: int = 1024, corpus_size: int = 3000,
                    seed: int = 0, vision_config=None, image_size: int | None = None,
                    projection_dim: int | None = None):
    """A finetune-stage (stage 2) model and processor (random clue modules; an all-zero prompt bank
    until the bridge).

    ``vision_config`` / ``image_size`` / ``projection_dim`` override the preset (the bridge passes
    the pretrained model's, so its weights fit).
    """
    import dataclasses

    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    from trrg.modeling.modeling_trrg import TRRGForConditionalGeneration

    preset = PRESETS[preset_name]
    overrides = {"image_size": image_size, "projection_dim": projection_dim}
    preset = dataclasses.replace(preset, **{k: v for k, v in overrides.items() if v is not None})
    llm_spec = llm or preset.llm
    tokenizer = tokenizer or _tokenizer_for(llm_spec, vocab_size, corpus_size)
    pretrained_vision = vision_config is None and isinstance(vision or preset.vision, str)
    vision_config = vision_config or config_of(vision or preset.vision, "vision")
    config = finetune_config(preset, tokenizer, vision_config=vision_config, llm=llm, clue=clue)
    torch.manual_seed(seed)
    # A pretrained LLM replaces the random one at once: build around a stand-in without weights, so that
    # no random LLM of the checkpoint's size is allocated and initialised first (it set the peak memory).
    model = TRRGForConditionalGeneration(_without_llm_weights(config) if isinstance(llm_spec, str) else config)
    model.config.text_config = config.text_config  # the real LLM's, which _load_pretrained_backbone loads under
    if pretrained_vision:
        _load_pretrained_backbone(model, "perception.vision_model.backbone", "vision_config", AutoModel,
                                  vision or preset.vision)
    _pair_shared_init(model, seed)
    if isinstance(llm_spec, str):
        _load_pretrained_backbone(model, "language_model", "text_config", AutoModelForCausalLM, llm_spec, tokenizer)
        model.clue_injector.match_word_embedding_scale(model.get_input_embeddings())
    set_generation_defaults(model)
    return model, build_processor(tokenizer, config)


def _load_pretrained_backbone(model, attribute: str, config_key: str, auto_class, source: str, tokenizer=None) -> None:
    """Put ``source``'s pretrained weights in the backbone at ``model.<attribute>`` (built random from
    the config), and make the loaded backbone's config the TRRG config's ``config_key``: one object, so
    that config.json says what the weights are after any resize (a stale vocab_size made a saved
    folder unloadable: "size mismatch ... ckpt: [834, 64] vs model: [836, 64]").

    Loaded under TRRG's copy of the config (special token ids set from the tokenizer) and in the
    model's dtype, as reloading the saved folder gives it. With a tokenizer, the embeddings grow to
    hold it (``<image>``/``<clue>`` were added); spare rows beyond it are kept (real checkpoints pad
    the vocabulary, often to a multiple of 64 for fast matmuls).
    """
    parent_name, _, name = attribute.rpartition(".")
    parent = model.get_submodule(parent_name)
    backbone = auto_class.from_pretrained(source, config=getattr(model.config, config_key), dtype=model.dtype)
    if tokenizer is not None and len(tokenizer) > backbone.get_input_embeddings().num_embeddings:
        backbone.resize_token_embeddings(len(tokenizer))
    setattr(parent, name, backbone)
    setattr(model.config, config_key, backbone.config)


def _without_llm_weights(config: TRRGConfig) -> TRRGConfig:
    """``config`` with a stand-in LLM of the same width (what the modules around it are built to) but no
    layers and a one-token vocabulary: next to nothing to allocate or initialise."""
    import copy

    stand_in = copy.deepcopy(config)
    stand_in.text_config.num_hidden_layers = 0
    stand_in.text_config.vocab_size = 1
    return stand_in


def _pair_shared_init(model, seed: int) -> None:
    """Give the visual path the same initial weights whichever clue modules are switched on, so
    that ablation arms with one seed differ only in what they switch (the LLM and the vision encoder
    are built before any optional module and are paired already)."""
    import torch

    for offset, name in enumerate(("visual_adapter", "multi_modal_projector")):
        torch.manual_seed(seed * 1000 + offset + 1)
        for module in getattr(model, name).modules():
            model._init_weights(module)
