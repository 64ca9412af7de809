"""Configurations of the TRRG models.

This file is part of the hub bundle (remote code): it may import only ``transformers`` and its
siblings in this folder.

* ``TRRGContrastiveConfig``: stage 1, an image encoder and a text encoder trained contrastively.
* ``TRRGClueConfig``: the clue injection / clue interaction / consistency-loss settings.
* ``TRRGConfig``: stage 2, vision encoder + clue modules + any causal LM.
"""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

from .constants_trrg import CHEXPERT_OBSERVATIONS, DEFAULT_DISEASE_PROMPTS

def _sub_config(value, default_model_type: str) -> PretrainedConfig:
    """Accept a config object, a dict (as read from config.json) or None."""
    if isinstance(value, PretrainedConfig):
        return value
    value = dict(value or {})
    model_type = value.pop("model_type", default_model_type)
    return AutoConfig.for_model(model_type, **value)


def _disease_fields(disease_names, disease_prompts) -> tuple[list[str], dict[str, list[str]]]:
    names = list(disease_names or CHEXPERT_OBSERVATIONS)
    prompts = dict(disease_prompts or {})
    for name in names:
        if name not in prompts:
            if name not in DEFAULT_DISEASE_PROMPTS:
                raise ValueError(
                    f"disease {name!r} has no prompts: pass disease_prompts={{{name!r}: [positive, negated]}}"
                )
            prompts[name] = DEFAULT_DISEASE_PROMPTS[name]
    return names, {name: list(prompts[name]) for name in names}


class TRRGContrastiveConfig(PretrainedConfig):
    """Stage 1: image encoder + text encoder + projections into a joint space.

    Args:
        vision_config: config of any transformers vision backbone (ResNet, ConvNeXt, ViT, Swin, ...).
        text_config: config of any transformers text encoder (BERT-like).
        projection_dim: size of the joint image-text space (also the prompt-bank width in stage 2).
        logit_scale_init: initial temperature as a scale (CLIP uses 1/0.07).
        logit_scale_max: the scale is clamped to this after each optimizer step (open_clip uses 100).
        disease_names / disease_prompts: the observation vocabulary and its positive/negated prompts.
        sentence_loss_weight / prompt_loss_weight: weights of the two contrastive losses.
        first_view_prompt_loss_weight: weight of the prompt loss of each multi-view study read from its
            first (frontal) view alone, beside the reading with all its views (0: off). Stage 1 then learns
            to read one-view studies without training visits that hide views, which cost the
            multi-view reading (docs/RESULTS.md, issue 20's probes).
        local_pool_sharpness: how close the pooling of patch evidence is to a max (log-sum-exp with
            this sharpness; 0 would be the mean): a small finding shows in few patches, so the
            study's local score follows its strongest patches (``smooth_max``).
    """

    model_type = "trrg_contrastive"
    sub_configs = {"vision_config": AutoConfig, "text_config": AutoConfig}

    def __init__(
        self,
        vision_config=None,
        text_config=None,
        projection_dim: int = 128,
        logit_scale_init: float = 1 / 0.07,
        logit_scale_max: float = 100.0,
        disease_names=None,
        disease_prompts=None,
        sentence_loss_weight: float = 1.0,
        prompt_loss_weight: float = 1.0,
        first_view_prompt_loss_weight: float = 1.0,
        image_size: int = 128,
        local_pool_sharpness: float = 5.0,
        **kwargs,
    ):
        self.vision_config = _sub_config(vision_config, "resnet")
        self.text_config = _sub_config(text_config, "bert")
        self.local_pool_sharpness = local_pool_sharpness
        self.projection_dim = projection_dim
        self.logit_scale_init = logit_scale_init
        self.logit_scale_max = logit_scale_max
        self.disease_names, self.disease_prompts = _disease_fields(disease_names, disease_prompts)
        self.sentence_loss_weight = sentence_loss_weight
        self.prompt_loss_weight = prompt_loss_weight
        self.first_view_prompt_loss_weight = first_view_prompt_loss_weight
        self.image_size = image_size
        super().__init__(**kwargs)

    @property
    def num_diseases(self) -> int:
        return len(self.disease_names)


class TRRGClueConfig(PretrainedConfig):
    """The clue modules of stage 2.

    Each disease clue is a *decision* (present / absent) taken from the stage-1 zero-shot
    probability with a per-disease threshold, written into the LLM as a learned token that is
    distinct per (disease, state) and at the scale of the LLM's word embeddings. The clue
    interaction then refines clues and visual tokens through zero-initialised gates, so stage 2
    starts from exact clue tokens and the unchanged stage-1 visual tokens.

    Args:
        use_clue_injection: feed one clue token per disease to the LLM (off = plain captioner input).
        use_clue_interaction: run the cross-modal clue interaction layers (off = clues and visual
            tokens reach the LLM without attending to each other).
        clue_thresholds: per-disease probability at or above which the clue says "present"
            (None: 0.5 for every disease). ``trrg finetune`` tunes them on the evaluation split.
        hidden_size: width of the clue interaction layers.
        num_layers / num_heads: size of the clue interaction module.
        consistency_loss_weight: lambda of the disease-aware consistency loss (0 disables it): one
            head per disease reads the LLM's hidden state at that disease's clue slot and predicts
            the reference report's label, so its gradient reaches the LLM.
    """

    model_type = "trrg_clue"

    def __init__(
        self,
        use_clue_injection: bool = True,
        use_clue_interaction: bool = True,
        clue_thresholds: list[float] | None = None,
        hidden_size: int = 128,
        num_layers: int = 1,
        num_heads: int = 4,
        consistency_loss_weight: float = 0.5,
        **kwargs,
    ):
        if hidden_size % num_heads:
            raise ValueError(f"clue hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
        if clue_thresholds is not None:
            clue_thresholds = [float(t) for t in clue_thresholds]
            bad = [t for t in clue_thresholds if not 0.0 < t < 1.0]
            if bad:
                raise ValueError(f"clue_thresholds must lie strictly between 0 and 1, got {bad}")
        self.use_clue_injection = use_clue_injection
        self.use_clue_interaction = use_clue_interaction
        self.clue_thresholds = clue_thresholds
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.consistency_loss_weight = consistency_loss_weight
        super().__init__(**kwargs)

    def thresholds_for(self, num_diseases: int) -> list[float]:
        """The decision threshold of each disease (0.5 where none was tuned)."""
        if self.clue_thresholds is None:
            return [0.5] * num_diseases
        if len(self.clue_thresholds) != num_diseases:
            raise ValueError(
                f"clue_thresholds has {len(self.clue_thresholds)} values for {num_diseases} diseases: "
                "give one per disease, in disease_names order"
            )
        return list(self.clue_thresholds)


class TRRGConfig(PretrainedConfig):
    """Stage 2: vision encoder (from stage 1) + projector + clue modules + a causal LM.

    Args:
        vision_config: the stage-1 vision backbone's config.
        text_config: config of any transformers causal LM (the report writer).
        clue_config: a ``TRRGClueConfig``.
        projection_dim: width of the stage-1 joint space (the prompt bank's last dimension).
        image_token_grid: visual tokens per view = image_token_grid ** 2 (backbone features are
            average-pooled to this grid). A fixed count, so that the processor can expand each
            ``<image>`` placeholder before the model runs.
        max_views: most views a study may have (frontal, lateral, ...).
        image_token_id / clue_token_id: placeholder ids in the LLM tokenizer.
        disease_names / disease_prompts: as in stage 1 (the prompt bank rows follow this order).
        local_pool_sharpness: as in stage 1 (copied by the bridge): the zero-shot perception pools
            patch evidence the same way in both stages.
    """

    model_type = "trrg"
    sub_configs = {"vision_config": AutoConfig, "text_config": AutoConfig, "clue_config": TRRGClueConfig}

    def __init__(
        self,
        vision_config=None,
        text_config=None,
        clue_config=None,
        projection_dim: int = 128,
        image_token_grid: int = 4,
        max_views: int = 2,
        image_token_id: int | None = None,
        clue_token_id: int | None = None,
        disease_names=None,
        disease_prompts=None,
        image_size: int = 128,
        tie_word_embeddings: bool = False,
        local_pool_sharpness: float = 5.0,
        **kwargs,
    ):
        self.local_pool_sharpness = local_pool_sharpness
        self.vision_config = _sub_config(vision_config, "resnet")
        self.text_config = _sub_config(text_config, "llama")
        if isinstance(clue_config, TRRGClueConfig):
            self.clue_config = clue_config
        else:
            self.clue_config = TRRGClueConfig(**dict(clue_config or {}))
        self.projection_dim = projection_dim
        if not isinstance(image_token_grid, int) or isinstance(image_token_grid, bool) or image_token_grid < 1:
            raise ValueError(f"image_token_grid={image_token_grid!r}: pass a positive int (visual tokens per view = its "
                             "square; 4 for the tiny preset, 7 for base)")
        self.image_token_grid = image_token_grid
        self.max_views = max_views
        self.image_token_id = image_token_id
        self.clue_token_id = clue_token_id
        self.disease_names, self.disease_prompts = _disease_fields(disease_names, disease_prompts)
        self.clue_config.thresholds_for(len(self.disease_names))  # one threshold per disease, or a clear error
        self.image_size = image_size
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    @property
    def num_diseases(self) -> int:
        return len(self.disease_names)

    @property
    def num_clue_tokens(self) -> int:
        """Clue placeholders the prompt carries: one per disease when clues are injected."""
        return self.num_diseases if self.clue_config.use_clue_injection else 0


TRRGContrastiveConfig.register_for_auto_class()
TRRGConfig.register_for_auto_class()
