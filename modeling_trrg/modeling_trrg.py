"""TRRG models: stage-1 contrastive pre-training and stage-2 clue-enhanced report generation.

Part of the hub bundle (remote code): imports only torch, transformers and sibling files.

Layout of this file:
1. typed outputs
2. pure functions for the math (losses, zero-shot logits, masking), tested without a model
3. blocks: the vision encoder wrapper, the zero-shot perception both stages share, the clue injector,
   the clue interaction module
4. ``TRRGContrastiveModel`` (stage 1) and ``TRRGForConditionalGeneration`` (stage 2), and the layout of
   their checkpoints
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import MODEL_MAPPING, AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightRenaming
from transformers.utils import ModelOutput

from .configuration_trrg import TRRGClueConfig, TRRGConfig, TRRGContrastiveConfig
from .distribution_trrg import TRRGTrainingDistribution, layer_statistics

# ---------------------------------------------------------------------------------------------
# 1. Outputs
# ---------------------------------------------------------------------------------------------


@dataclass
class TRRGContrastiveOutput(ModelOutput):
    """Stage-1 output. ``loss`` = sentence_loss * w_s + prompt_loss * w_p + first_view_prompt_loss * w_f
    (the parts are logged apart)."""

    loss: torch.Tensor | None = None
    sentence_loss: torch.Tensor | None = None
    prompt_loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None  # (batch, batch) scaled cosine image->sentence
    image_embeds: torch.Tensor | None = None  # (batch, projection_dim), L2-normalised
    text_embeds: torch.Tensor | None = None  # (batch, projection_dim), L2-normalised
    disease_logits: torch.Tensor | None = None  # (batch, diseases): logit of p(disease present)
    # The prompt loss of the multi-view studies read from their first (frontal) view alone.
    first_view_prompt_loss: torch.Tensor | None = None


@dataclass
class TRRGDiseasePerception(ModelOutput):
    """The zero-shot perception with its evidence: ``predict_diseases(..., return_maps=True)``."""

    disease_probs: torch.Tensor | None = None  # (batch, diseases)
    # (batch, views, diseases, h, w): per patch, cos(patch, positive prompt) - cos(patch, negated
    # prompt), in [-2, 2]; where the disease's evidence lies. Padded views are 0. The grid covers the
    # processor's square (letterboxed) input image.
    evidence_maps: torch.Tensor | None = None
    # (batch,) how unlike the training images a study is (``TRRGTrainingDistribution``): above 1, out of
    # distribution; None when the model holds no statistics of its training images (unknown).
    familiarity: torch.Tensor | None = None


@dataclass
class VisionFeatures(ModelOutput):
    """``TRRGVisionEncoder``'s output: what both the perception and the LLM's visual tokens are made from."""

    patch_tokens: torch.Tensor | None = None  # (batch, views, tokens, width); padded views are zero
    view_embeds: torch.Tensor | None = None  # (batch, views, 2 * width): per-view [average ; max] pool
    study_embeds: torch.Tensor | None = None  # (batch, 2 * width): masked mean over the study's views
    # With ``statistics_layers``: per chosen backbone layer, (batch, views, size) per-channel mean and std
    # over the image (``layer_statistics``): what ``TRRGTrainingDistribution`` compares with training.
    layer_statistics: tuple[torch.Tensor, ...] | None = None
    # With ``keep_layer``: that backbone layer's output for the real views (padded views are never encoded),
    # as the backbone gives it ((n, channels, h, w), or (n, tokens, width) for a transformer) and in the
    # graph: what ``attribution_maps`` differentiates the disease logits by.
    kept_layer: torch.Tensor | None = None


@dataclass
class TRRGJointEmbeddings(ModelOutput):
    """A study in the stage-1 joint image-text space (``TRRGPerception.embed``), L2-normalised, fp32."""

    study_embeds: torch.Tensor | None = None  # (batch, projection_dim): the views' pooled features, projected
    patch_embeds: torch.Tensor | None = None  # (batch, views * patches, projection_dim): every patch, projected
    patch_mask: torch.Tensor | None = None  # (batch, views * patches) bool: False on padded views


@dataclass
class TRRGCluePrediction(ModelOutput):
    """``predict_clues``: the zero-shot perception and the clue decisions the model injects from it."""

    disease_probs: torch.Tensor | None = None  # (batch, diseases)
    clue_states: torch.Tensor | None = None  # (batch, diseases) long: 1 present, 0 absent
    evidence_maps: torch.Tensor | None = None  # with return_maps: as in TRRGDiseasePerception
    # The vision encoder's output the perception was computed from: give it to ``generate(vision_features=...,
    # clue_probs=disease_probs)`` and the images are not encoded a second time.
    vision_features: VisionFeatures | None = None
    familiarity: torch.Tensor | None = None  # (batch,): as in TRRGDiseasePerception; None: unknown

    @property
    def in_distribution(self) -> torch.Tensor | None:
        """(batch,) bool: the study resembles the training images; None when the model cannot tell."""
        return None if self.familiarity is None else self.familiarity <= 1.0


@dataclass
class TRRGMultimodalFeatures(ModelOutput):
    """``get_multimodal_features``: what fills the LLM's ``<image>``/``<clue>`` slots, and the perception
    that decided the clues."""

    visual_tokens: torch.Tensor | None = None  # (real views * tokens, llm width), in study order
    clue_tokens: torch.Tensor | None = None  # (batch, diseases, llm width); None without clue injection
    disease_probs: torch.Tensor | None = None  # (batch, diseases)
    clue_states: torch.Tensor | None = None  # (batch, diseases) long: the injected decisions


@dataclass
class TRRGCausalLMOutputWithPast(ModelOutput):
    """Stage-2 output. ``loss`` = lm_loss + consistency_loss_weight * consistency_loss."""

    loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    consistency_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    disease_probs: torch.Tensor | None = None  # (batch, diseases): zero-shot probabilities (the perception)
    clue_states: torch.Tensor | None = None  # (batch, diseases): injected decisions, 1 present / 0 absent
    clue_logits: torch.Tensor | None = None  # (batch, diseases): consistency heads on the LLM's clue slots


# ---------------------------------------------------------------------------------------------
# 2. Pure functions
# ---------------------------------------------------------------------------------------------


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of ``values`` over ``dim`` counting only positions where ``mask`` is true."""
    mask = mask.to(values.dtype)
    while mask.dim() < values.dim():
        mask = mask.unsqueeze(-1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)


def same_text_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, batch) bool: True where two rows hold the same token sequence.

    In radiology reports the same negated sentence ("no pneumothorax .") belongs to many images, so
    identical sentences in a batch are positives for each other, not negatives.
    """
    if attention_mask is not None:
        input_ids = input_ids.masked_fill(attention_mask == 0, -1)
    return (input_ids[:, None, :] == input_ids[None, :, :]).all(-1)


def multi_positive_contrastive_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor, positive_mask: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE where row i may have several positive columns (MIL-NCE form).

    loss_i = -log(sum_{j positive} exp(l_ij) / sum_j exp(l_ij)): matching any positive is enough,
    so an image is never pushed away from a duplicate of its own sentence, and the loss can reach 0.

    Args:
        image_embeds: (n_images, dim), L2-normalised.
        text_embeds: (n_texts, dim), L2-normalised.
        logit_scale: scalar, the inverse temperature (already exponentiated).
        positive_mask: (n_images, n_texts) bool; every row and column must have a positive.
    Returns:
        scalar: mean of the image->text and text->image losses.
    """
    return multi_positive_loss_from_logits(logit_scale * image_embeds @ text_embeds.t(), positive_mask)


def multi_positive_loss_from_logits(logits: torch.Tensor, positive_mask: torch.Tensor) -> torch.Tensor:
    """``multi_positive_contrastive_loss`` for (n_images, n_texts) logits computed any way (global,
    local, or their mean)."""
    logits = logits.float()  # log-sum-exp over a batch in fp32 (bf16 keeps ~3 digits)
    positive_logits = logits.masked_fill(~positive_mask, float("-inf"))
    image_to_text = (torch.logsumexp(logits, dim=1) - torch.logsumexp(positive_logits, dim=1)).mean()
    text_to_image = (torch.logsumexp(logits, dim=0) - torch.logsumexp(positive_logits, dim=0)).mean()
    return (image_to_text + text_to_image) / 2


def disease_logits_from_prompt_bank(
    image_embeds: torch.Tensor, prompt_bank: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Zero-shot disease logits: the image is compared with each disease's positive and negated prompt.

    The 2-way softmax over scaled cosines, softmax([s*cos+, s*cos-])[0], equals sigmoid of the
    returned logit s * (cos+ - cos-).

    Args:
        image_embeds: (batch, dim), L2-normalised.
        prompt_bank: (diseases, 2, dim), L2-normalised; [:, 0] positive, [:, 1] negated prompt.
    Returns:
        (batch, diseases) logits.
    """
    cosines = torch.einsum("be,dke->bdk", image_embeds, prompt_bank)  # (batch, diseases, 2)
    return logit_scale * (cosines[..., 0] - cosines[..., 1])


def first_view_features(features: VisionFeatures) -> VisionFeatures:
    """A study's vision features as if it had only its first view (the frontal one: the processor puts
    frontal views first): what a one-view study of the same patient would give."""
    return VisionFeatures(patch_tokens=features.patch_tokens[:, :1], view_embeds=features.view_embeds[:, :1],
                          study_embeds=features.view_embeds[:, 0])


def smooth_max(values: torch.Tensor, mask: torch.Tensor, dim: int, sharpness: float) -> torch.Tensor:
    """Log-sum-exp pooling over ``dim``, counting only positions where ``mask`` is true:
    (1 / r) * log(mean(exp(r * v))), between the mean (r -> 0) and the max (r -> inf). Every patch
    gets gradient, the strongest most (the multiple-instance pooling of weakly labelled images).

    Args:
        values: any shape; mask: broadcastable to it (bool); sharpness: r > 0.
    """
    mask = mask.expand_as(values)
    scaled = (sharpness * values).masked_fill(~mask, float("-inf"))
    count = mask.sum(dim).clamp_min(1).to(values.dtype)
    return (torch.logsumexp(scaled, dim=dim) - count.log()) / sharpness


def local_disease_contrast(patch_embeds: torch.Tensor, prompt_bank: torch.Tensor) -> torch.Tensor:
    """Per-patch evidence: cos(patch, positive prompt) - cos(patch, negated prompt).

    Args:
        patch_embeds: (..., patches, dim), L2-normalised.
        prompt_bank: (diseases, 2, dim), L2-normalised.
    Returns:
        (..., patches, diseases), in [-2, 2]: the evidence maps, before any pooling.
    """
    cosines = torch.einsum("...ne,dke->...ndk", patch_embeds, prompt_bank)
    return cosines[..., 0] - cosines[..., 1]


def local_disease_logits(
    patch_embeds: torch.Tensor, patch_mask: torch.Tensor, prompt_bank: torch.Tensor, logit_scale: torch.Tensor,
    sharpness: float,
) -> torch.Tensor:
    """Zero-shot disease logits from the patches: each disease's per-patch evidence pooled by
    ``smooth_max`` over the study's real patches (all views), so a finding seen in a few patches
    counts fully instead of being averaged away.

    Args:
        patch_embeds: (batch, patches, dim), L2-normalised; patch_mask: (batch, patches) bool.
    Returns:
        (batch, diseases) logits.
    """
    contrast = local_disease_contrast(patch_embeds, prompt_bank)  # (batch, patches, diseases)
    return logit_scale * smooth_max(contrast, patch_mask.unsqueeze(-1), dim=1, sharpness=sharpness)


def local_sentence_logits(
    patch_embeds: torch.Tensor, patch_mask: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor,
    sharpness: float,
) -> torch.Tensor:
    """(images, texts) logits: each sentence's similarity to the image's best-matching patches
    (``smooth_max`` over patches), the local counterpart of ``scale * image @ text.T``.

    Args:
        patch_embeds: (images, patches, dim), L2-normalised; patch_mask: (images, patches) bool;
        text_embeds: (texts, dim), L2-normalised.
    """
    similarities = torch.einsum("bne,te->bnt", patch_embeds, text_embeds)
    return logit_scale * smooth_max(similarities, patch_mask.unsqueeze(-1), dim=1, sharpness=sharpness)


def positive_class_weight(prevalence: torch.Tensor, power: float) -> torch.Tensor:
    """((1 - prevalence) / prevalence) ** power, the positive weight that counters rare findings.

    power 0 gives plain BCE, 1 balances positives and negatives, 0.5 (our default) is in between.
    """
    prevalence = prevalence.clamp(1e-3, 1 - 1e-3)
    return ((1 - prevalence) / prevalence) ** power


def weighted_disease_bce(
    logits: torch.Tensor,
    targets: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    study_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-disease binary cross-entropy, positives weighted by ``pos_weight`` (diseases,), entries
    where ``mask`` is false ignored (e.g. an observation the labeler could not decide).

    ``study_weights`` (batch,) scales each study's terms while the mean stays over every entry the
    mask keeps: a study weighted 0 adds nothing and raises no other study's share, so the loss of
    one batch split over processes is still the mean of the processes' losses.
    """
    losses = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=pos_weight, reduction="none")
    mask = torch.ones_like(losses) if mask is None else mask.to(losses.dtype)
    weights = mask if study_weights is None else mask * study_weights.to(losses.dtype).unsqueeze(-1)
    return (losses * weights).sum() / mask.sum().clamp_min(1.0)


def soft_clue_embeddings(probs: torch.Tensor, prompt_bank: torch.Tensor) -> torch.Tensor:
    """p * positive prompt + (1 - p) * negated prompt, per disease: the clue's stage-1 meaning.

    Args:
        probs: (batch, diseases) in [0, 1].
        prompt_bank: (diseases, 2, dim).
    Returns:
        (batch, diseases, dim).
    """
    probs = probs.unsqueeze(-1)
    return probs * prompt_bank[:, 0] + (1 - probs) * prompt_bank[:, 1]


def clue_states_from_probs(probs: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """(batch, diseases) probabilities and (diseases,) thresholds -> (batch, diseases) long, 1 = present.

    Per-disease thresholds, because a rare finding with a well-ranked classifier (high AUROC) can sit
    below 0.5 for most of its positives: one global threshold would drop exactly those findings.
    """
    return (probs >= thresholds.to(probs.dtype)).long()


def resolve_clue_states(perceived: torch.Tensor, forced: torch.Tensor | None) -> torch.Tensor:
    """The decisions to inject: ``forced`` where it is 0 or 1, the model's own perception where -1."""
    if forced is None:
        return perceived
    forced = forced.to(perceived.device).long()
    return torch.where(forced >= 0, forced, perceived)


def state_embeddings(states: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Pick one learned embedding per (disease, state).

    Args:
        states: (batch, diseases) long, 1 present / 0 absent.
        table: (diseases, 2, width); [:, 0] present, [:, 1] absent (the prompt bank's order).
    Returns:
        (batch, diseases, width).
    """
    diseases = torch.arange(table.shape[0], device=states.device)
    return table[diseases, 1 - states]  # advanced indexing broadcasts over the batch


def weighted_lm_loss(logits: torch.Tensor, labels: torch.Tensor, token_weights: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, each target token weighted: sum(w * ce) / sum(w).

    Reports are mostly negated boilerplate; weighting the tokens of sentences that state a finding
    keeps the few words that carry the diagnosis from drowning in it.

    Args:
        logits: (batch, length, vocab); labels: (batch, length), -100 where nothing is predicted;
        token_weights: (batch, length), the weight of predicting labels[:, t] (aligned with labels).
    Returns:
        scalar.
    """
    targets, weights = labels[:, 1:], token_weights[:, 1:].to(torch.float32)
    losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="none")
    weights = weights.flatten() * (targets.flatten() != -100)
    return (losses * weights).sum() / weights.sum().clamp_min(1e-8)


def per_disease_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """One linear head per disease: (batch, diseases, width) x (diseases, width) -> (batch, diseases).

    A head shared by all diseases lets every "present" clue collapse onto one direction (one global
    normal/abnormal switch); separate heads keep the diseases apart.
    """
    return torch.einsum("bdw,dw->bd", hidden, weight.to(hidden.dtype)) + bias.to(hidden.dtype)


# ---------------------------------------------------------------------------------------------
# 3. Blocks
# ---------------------------------------------------------------------------------------------


def vision_feature_size(vision_config) -> int:
    """Channel width of a transformers vision backbone's last hidden state."""
    hidden_sizes = getattr(vision_config, "hidden_sizes", None)
    if hidden_sizes:
        return hidden_sizes[-1]
    return vision_config.hidden_size


def patch_embeddings(
    patch_tokens: torch.Tensor, view_mask: torch.Tensor, projection: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, views, patches, width) tokens -> (batch, views * patches, dim) L2-normalised patch
    embeddings in the joint space, and their (batch, views * patches) mask (padded views are out)."""
    patches = patch_tokens.shape[2]
    embeds = F.normalize(projection(patch_tokens), dim=-1).flatten(1, 2)
    return embeds, view_mask.bool().repeat_interleave(patches, dim=1)


def evidence_maps(contrast: torch.Tensor, patch_mask: torch.Tensor, views: int) -> torch.Tensor:
    """(batch, views * patches, diseases) per-patch evidence -> (batch, views, diseases, h, w) maps on
    the backbone's square patch grid, 0 on padded views."""
    batch, positions, diseases = contrast.shape
    patches = positions // views
    side = math.isqrt(patches)
    if side * side != patches:
        raise ValueError(f"{patches} patches per view do not form a square grid: the evidence maps need one")
    contrast = contrast.masked_fill(~patch_mask.unsqueeze(-1), 0.0)
    return contrast.reshape(batch, views, side, side, diseases).permute(0, 1, 4, 2, 3)


def gradient_attribution(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Layer gradient x activation (the gradient x input of Shrikumar et al. 2016, arXiv 1605.01713, taken
    at a hidden layer; Ancona et al., ICLR 2018): how much each position of a feature map adds to a logit,
    to first order. (n, channels, h, w) activations and the logit's gradient with respect to them ->
    (n, h, w), summed over channels, the positive part (evidence for the finding; what speaks against it
    is not drawn)."""
    return (gradients.float() * activations.float()).sum(dim=1).clamp_min(0)


def _vision_backbone_from_config(vision_config) -> PreTrainedModel:
    """The vision backbone, with the attention implementation TRRG was loaded with where the backbone has
    it, else its own default: ``attn_implementation`` is meant for the language model, and a
    convolutional backbone has no attention to switch (a ResNet refuses "sdpa"), a Swin no flex attention."""
    requested = vision_config._attn_implementation or "eager"
    flag = {"sdpa": "_supports_sdpa", "flex_attention": "_supports_flex_attn"}.get(requested)
    if flag is None and "flash" in requested:
        flag = "_supports_flash_attn"
    if flag is not None and not getattr(MODEL_MAPPING[type(vision_config)], flag):
        vision_config._attn_implementation = None
    return AutoModel.from_config(vision_config)


class TRRGVisionEncoder(nn.Module):
    """Any transformers vision backbone, run on the real views only (padded views never reach batch
    norm), returning patch tokens on a fixed grid and global embeddings.

    The global embedding of a view concatenates average and max pooling: average pooling alone
    dilutes small findings (a nodule, a line, a pneumothorax rim) into the whole image.
    """

    def __init__(self, vision_config, token_grid: int | None):
        super().__init__()
        self.backbone = _vision_backbone_from_config(vision_config)
        self.token_grid = token_grid
        self.hidden_size = vision_feature_size(vision_config)
        self.global_size = 2 * self.hidden_size

    def _feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) -> (n, width, h, w), whether the backbone is convolutional or a transformer."""
        return self._encode(pixel_values)[0]

    def _encode(self, pixel_values: torch.Tensor, statistics_layers: Sequence[int] | None = None,
                keep_layer: int | None = None):
        """The feature map of ``_feature_map``, the ``layer_statistics`` of the ``statistics_layers`` hidden
        states (None when not asked) and the ``keep_layer`` hidden state as the backbone gives it (None when not
        asked)."""
        # The processor gives fp32 pixels; a model loaded in bf16 has a bf16 backbone.
        output = self.backbone(pixel_values=pixel_values.to(self.backbone.dtype),
                               output_hidden_states=statistics_layers is not None or keep_layer is not None)
        statistics = None
        if statistics_layers is not None:
            statistics = [layer_statistics(output.hidden_states[index]) for index in statistics_layers]
        kept = None if keep_layer is None else output.hidden_states[keep_layer]
        return self._as_grid(output.last_hidden_state), statistics, kept

    @staticmethod
    def _as_grid(hidden: torch.Tensor) -> torch.Tensor:
        if hidden.dim() == 4:
            return hidden
        tokens = hidden.shape[1]
        side = math.isqrt(tokens)
        if side * side != tokens:  # a leading CLS token (ViT): drop it, keep the patch grid
            hidden, side = hidden[:, 1:], math.isqrt(tokens - 1)
        return hidden.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[2], side, side)

    def forward(self, pixel_values: torch.Tensor, view_mask: torch.Tensor,
                statistics_layers: Sequence[int] | None = None, keep_layer: int | None = None) -> VisionFeatures:
        batch, views = pixel_values.shape[:2]
        real = view_mask.reshape(-1).bool()
        feature_map, statistics, kept = self._encode(pixel_values.reshape(batch * views, *pixel_values.shape[2:])[real],
                                                     statistics_layers, keep_layer)
        view_global = torch.cat([feature_map.mean(dim=(2, 3)), feature_map.amax(dim=(2, 3))], dim=-1)  # (n_real, 2*width)
        if self.token_grid:
            feature_map = F.adaptive_avg_pool2d(feature_map, self.token_grid)
        tokens = feature_map.flatten(2).transpose(1, 2)  # (n_real, tokens, width)

        patch_tokens = tokens.new_zeros(batch * views, *tokens.shape[1:])
        patch_tokens[real] = tokens
        view_embeds = view_global.new_zeros(batch * views, view_global.shape[-1])
        view_embeds[real] = view_global
        view_embeds = view_embeds.reshape(batch, views, -1)
        return VisionFeatures(
            patch_tokens=patch_tokens.reshape(batch, views, *tokens.shape[1:]),
            view_embeds=view_embeds,
            study_embeds=masked_mean(view_embeds, view_mask, dim=1),
            layer_statistics=None if statistics is None else tuple(
                _per_view(values, real, batch, views) for values in statistics),
            kept_layer=kept,
        )


# The backbone's hidden state the attribution maps are drawn on: the stem's output (hidden state 0), the finest
# grid of a convolutional backbone (stride 4: 32 x 32 at the tiny preset's 128 px, 56 x 56 for ResNet-50 at
# 224), where a 10-mm nodule still covers a few positions; a ViT's is its patch embeddings. Chosen on the
# demo's validation split among the tiny preset's hidden states (benchmarks/evidence_maps.py --split val:
# mean pointing 0.62, the first stage's 0.56); docs/RESULTS.md, "Where the evidence lies".
ATTRIBUTION_LAYER = 0


def _max_views(config) -> int:
    return getattr(config, "max_views", 2)


def _per_view(values: torch.Tensor, real: torch.Tensor, batch: int, views: int) -> torch.Tensor:
    """(real views, size) -> (batch, views, size), padded views zero."""
    out = values.new_zeros(batch * views, values.shape[-1])
    out[real] = values
    return out.reshape(batch, views, -1)


class TRRGPerception(nn.Module):
    """The zero-shot disease perception of stage 1, one module in both stages: the vision encoder, the
    projections of the study embedding and of every patch into the joint image-text space, the
    temperature, and the positive weights of the disease-prompt loss.

    Against a prompt bank (each disease's positive and negated prompt, embedded by the stage-1 text
    encoder: passed by stage 1, stored by stage 2) it gives the disease logits, the mean of a global
    (study vs prompts) and a local (best patches vs prompts) logit, and the per-patch evidence maps.
    The bridge hands it from stage 1 to stage 2 whole.

    It computes in fp32 whatever the weights' dtype: stage 2 decides its clues by comparing these
    probabilities with per-observation thresholds, and bf16 keeps ~3 significant digits.

    Args:
        config: the stage's config (``projection_dim``, ``num_diseases``, ``local_pool_sharpness``, read when
            used: the bridge sets stage 1's sharpness on a stage-2 config after it is built).
        vision_model: the vision encoder, built by the model first (its random init comes first in the
            seeded presets).
    """

    # The parts the checkpoints of both stages name at their top level (see ``_CHECKPOINT_LAYOUT``).
    checkpoint_names = ("vision_model", "visual_projection", "patch_projection", "logit_scale", "disease_pos_weight",
                        "training_distribution")

    def __init__(self, config: TRRGConfig | TRRGContrastiveConfig, vision_model: TRRGVisionEncoder):
        super().__init__()
        self.config = config
        self.vision_model = vision_model
        self.visual_projection = nn.Linear(vision_model.global_size, config.projection_dim, bias=False)
        # Patches into the same joint space: local alignment with sentences and disease prompts.
        self.patch_projection = nn.Linear(vision_model.hidden_size, config.projection_dim, bias=False)
        # One element, not 0-dim: FSDP2's fully_shard rejects scalar parameters.
        self.logit_scale = nn.Parameter(torch.tensor([math.log(getattr(config, "logit_scale_init", 1 / 0.07))]))
        # Set by the stage-1 trainer from the training labels (positive_class_weight); saved with the weights.
        self.register_buffer("disease_pos_weight", torch.ones(config.num_diseases))
        # What the training images look like (fitted at the end of training; sized by the config).
        self.training_distribution = TRRGTrainingDistribution(self.distribution_layout["sizes"], _max_views(config))

    @property
    def distribution_layout(self) -> dict:
        """``config.training_distribution``: the backbone layers compared and their statistics' sizes."""
        return getattr(self.config, "training_distribution", None) or {"layers": [], "sizes": []}

    @property
    def statistics_layers(self) -> list[int] | None:
        """The layers whose statistics the vision encoder must return; None when nothing is fitted."""
        return self.distribution_layout["layers"] if self.training_distribution.fitted else None

    def reset_training_distribution(self, layers: list[int], sizes: list[int]) -> TRRGTrainingDistribution:
        """An empty ``TRRGTrainingDistribution`` for these layers, recorded in the config, to be fitted."""
        self.config.training_distribution = {"layers": list(layers), "sizes": list(sizes)}
        self.training_distribution = TRRGTrainingDistribution(sizes, _max_views(self.config)).to(self.disease_pos_weight.device)
        return self.training_distribution

    def embed(self, features: VisionFeatures, view_mask: torch.Tensor) -> TRRGJointEmbeddings:
        """The study embedding and the patch embeddings of the vision encoder's ``features``."""
        study = F.normalize(F.linear(features.study_embeds.float(), self.visual_projection.weight.float()), dim=-1)
        patches, patch_mask = patch_embeddings(
            features.patch_tokens.float(), view_mask, lambda tokens: F.linear(tokens, self.patch_projection.weight.float())
        )
        return TRRGJointEmbeddings(study_embeds=study, patch_embeds=patches, patch_mask=patch_mask)

    def disease_logits(self, embeddings: TRRGJointEmbeddings, prompt_bank: torch.Tensor) -> torch.Tensor:
        """(batch, diseases) zero-shot logits: the mean of the global and the local logits."""
        scale, prompt_bank = self.logit_scale.float().exp(), prompt_bank.float()
        global_logits = disease_logits_from_prompt_bank(embeddings.study_embeds, prompt_bank, scale)
        local_logits = local_disease_logits(embeddings.patch_embeds, embeddings.patch_mask, prompt_bank, scale,
                                            self.config.local_pool_sharpness)
        return (global_logits + local_logits) / 2

    def evidence_maps(self, embeddings: TRRGJointEmbeddings, prompt_bank: torch.Tensor, views: int) -> torch.Tensor:
        """(batch, views, diseases, h, w): where each disease's evidence lies (see ``TRRGDiseasePerception``)."""
        contrast = local_disease_contrast(embeddings.patch_embeds, prompt_bank.float())
        return evidence_maps(contrast, embeddings.patch_mask, views)

    def attribution_maps(self, pixel_values: torch.Tensor, view_mask: torch.Tensor, prompt_bank: torch.Tensor,
                         layer: int = ATTRIBUTION_LAYER) -> torch.Tensor:
        """(batch, views, diseases, h, w): where each disease's zero-shot logit comes from, as gradient x
        activation at the backbone's hidden state ``layer`` (``gradient_attribution``), on that layer's
        grid; padded views are 0. Finer than ``evidence_maps`` (the patch grid the local logit pools):
        32 x 32 instead of 4 x 4 for the tiny preset, so a nodule shows as a spot, not a lung. Call it in
        eval mode (batch norm in training mode mixes the studies of a batch); it costs one backward pass
        per disease."""
        batch, views = view_mask.shape
        real = view_mask.reshape(-1).bool()
        with torch.inference_mode(False), torch.enable_grad():
            # The pixels carry the graph, so a frozen perception (stage 2) is differentiated too; clones,
            # because tensors made under inference mode (a pipeline's) cannot enter a graph.
            pixels, view_mask = pixel_values.clone().requires_grad_(True), view_mask.clone()
            features = self.vision_model(pixels, view_mask, keep_layer=layer)
            logits = self.disease_logits(self.embed(features, view_mask), prompt_bank.clone())
            activations, as_grid = features.kept_layer, self.vision_model._as_grid
            maps = [gradient_attribution(as_grid(activations.detach()), as_grid(
                        torch.autograd.grad(logits[:, disease].sum(), activations, retain_graph=True)[0]))
                    for disease in range(logits.shape[1])]
        maps = torch.stack(maps, dim=1)  # (real views, diseases, h, w)
        full = maps.new_zeros(batch * views, *maps.shape[1:])
        full[real] = maps
        return full.reshape(batch, views, *maps.shape[1:])

    def forward(self, features: VisionFeatures, view_mask: torch.Tensor, prompt_bank: torch.Tensor,
                return_maps: bool = False) -> TRRGDiseasePerception:
        """The zero-shot probabilities (and with ``return_maps`` the evidence maps) of the encoded studies."""
        embeddings = self.embed(features, view_mask)
        probs = torch.sigmoid(self.disease_logits(embeddings, prompt_bank))
        maps = self.evidence_maps(embeddings, prompt_bank, view_mask.shape[1]) if return_maps else None
        return TRRGDiseasePerception(disease_probs=probs, evidence_maps=maps, familiarity=self.familiarity(features, view_mask))

    def familiarity(self, features: VisionFeatures, view_mask: torch.Tensor) -> torch.Tensor | None:
        """(batch,) familiarity scores of the encoded studies; None without fitted statistics (or when the
        features were computed without the layer statistics)."""
        if features.layer_statistics is None:
            return None
        return self.training_distribution.familiarity(list(features.layer_statistics), view_mask)

    def clamp_logit_scale(self, maximum: float) -> None:
        """Keep the temperature sane (open_clip clamps after each optimizer step too)."""
        with torch.no_grad():
            self.logit_scale.clamp_(0, math.log(maximum))


class TRRGClueInjector(nn.Module):
    """Turns the zero-shot disease decisions into clues, one per disease.

    Two views of the same clue:

    * the **LLM clue token**: one learned embedding per (disease, state), in the LLM's width and at
      the scale of its word embeddings, kept outside the LLM's (possibly frozen, LoRA) embedding
      table. A tiny LM learns to copy such a token within a few hundred steps; a p-weighted mix of
      two stage-1 prompt vectors pushed through an MLP moved by ~3% of a word embedding when p went
      0 -> 1, and the LM did not learn to read it.
    * the **interaction clue**: in the clue width, (disease, state) embedding + a projection of the
      clue's stage-1 meaning and confidence ([p * bank+ + (1 - p) * bank- ; p]); it attends to the
      visual tokens and feeds back into the LLM clue token through a zero-initialised gate.

    Extra clues (any number, e.g. stage-1 embeddings of indication or prior-report sentences) are
    projected into the interaction width; they take part in the interaction but get no LLM slot.
    """

    def __init__(self, config: TRRGClueConfig, num_diseases: int, projection_dim: int, llm_width: int):
        super().__init__()
        hidden = config.hidden_size
        self.token_table = nn.Parameter(torch.empty(num_diseases, 2, llm_width))  # [d, 0] present, [d, 1] absent
        self.state_table = nn.Parameter(torch.empty(num_diseases, 2, hidden))
        self.perception_proj = nn.Linear(projection_dim + 1, hidden)
        self.extra_clue_proj = nn.Linear(projection_dim, hidden)

    def clue_tokens(self, states: torch.Tensor) -> torch.Tensor:
        """(batch, diseases) states -> (batch, diseases, llm width)."""
        return state_embeddings(states, self.token_table)

    def interaction_clues(self, states: torch.Tensor, probs: torch.Tensor, prompt_bank: torch.Tensor) -> torch.Tensor:
        """(batch, diseases) states and probs -> (batch, diseases, hidden)."""
        meaning = torch.cat([soft_clue_embeddings(probs, prompt_bank), probs.unsqueeze(-1)], dim=-1)
        return state_embeddings(states, self.state_table) + self.perception_proj(meaning.to(self.state_table.dtype))

    def embed_extra(self, clue_embeds: torch.Tensor) -> torch.Tensor:
        """(batch, k, projection_dim) -> (batch, k, hidden), in this module's dtype (fp32 when loaded in bf16)."""
        return self.extra_clue_proj(clue_embeds.to(self.extra_clue_proj.weight.dtype))

    @torch.no_grad()
    def match_word_embedding_scale(self, word_embeddings: nn.Module, sample: int = 4096) -> None:
        """Rescale each LLM clue token to the mean norm of the vectors the LLM's embedding module
        outputs (a pretrained LLM's are far from the random-init scale). The module's outputs, not its
        table: Gemma 3 multiplies the table by sqrt(width) inside the module. An even sample of the
        vocabulary is enough for a mean, and a 150k-word table is not copied."""
        vocab = word_embeddings.weight.shape[0]
        ids = torch.linspace(0, vocab - 1, min(vocab, sample), device=word_embeddings.weight.device).long()
        target = word_embeddings(ids).float().norm(dim=-1).mean()
        rows = self.token_table.float()
        self.token_table.copy_((rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-8) * target).to(self.token_table.dtype))


class TRRGGate(nn.Module):
    """tanh(g) with g initialised to 0 (Flamingo-style): a residual update that starts switched off."""

    def __init__(self):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, update: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.gate).to(update.dtype) * update


class TRRGCrossAttention(nn.Module):
    """Pre-norm, gated residual cross-attention: queries attend to a masked set of keys."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.norm_query = nn.LayerNorm(hidden)
        self.norm_key = nn.LayerNorm(hidden)
        self.attention = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.gate = TRRGGate()

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        keys = self.norm_key(keys)
        attended, _ = self.attention(
            self.norm_query(queries), keys, keys, key_padding_mask=~key_mask.bool(), need_weights=False
        )
        return queries + self.gate(attended)


class TRRGFeedForward(nn.Module):
    """Pre-norm, gated residual MLP."""

    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.gate = TRRGGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gate(self.net(x))


class TRRGClueInteractionLayer(nn.Module):
    """One layer of cross-modal clue interaction at two granularities.

    clues  <- global image embeddings (study + each view)     [global granularity]
    clues  <- patch tokens of every view                       [patch granularity]
    patches <- clues (+ an always-present null key, so an example with no clue is well defined)

    Every update is gated (zero-initialised), so at the start of stage 2 clues and visual tokens
    pass through unchanged: the interaction can only add what training finds useful.
    """

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.clue_to_global = TRRGCrossAttention(hidden, heads)
        self.clue_to_patch = TRRGCrossAttention(hidden, heads)
        self.patch_to_clue = TRRGCrossAttention(hidden, heads)
        self.clue_ffn = TRRGFeedForward(hidden)
        self.patch_ffn = TRRGFeedForward(hidden)

    def forward(self, clues, clue_mask, patches, patch_mask, globals_, global_mask):
        clues = self.clue_to_global(clues, globals_, global_mask)
        clues = self.clue_to_patch(clues, patches, patch_mask)
        clues = self.clue_ffn(clues)
        patches = self.patch_ffn(self.patch_to_clue(patches, clues, clue_mask))
        return clues, patches


class TRRGClueInteraction(nn.Module):
    """Visual embeddings and any number of clue embeddings attend to each other (padded + masked)."""

    def __init__(self, config: TRRGClueConfig):
        super().__init__()
        self.null_key = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.layers = nn.ModuleList(
            TRRGClueInteractionLayer(config.hidden_size, config.num_heads) for _ in range(config.num_layers)
        )

    def forward(
        self,
        clues: torch.Tensor,  # (batch, clues, hidden)
        clue_mask: torch.Tensor,  # (batch, clues) bool
        patches: torch.Tensor,  # (batch, views * tokens, hidden)
        patch_mask: torch.Tensor,  # (batch, views * tokens) bool
        globals_: torch.Tensor,  # (batch, 1 + views, hidden)
        global_mask: torch.Tensor,  # (batch, 1 + views) bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = clues.shape[0]
        null = self.null_key.to(clues.dtype).expand(batch, 1, -1)
        with_null_mask = torch.cat([clue_mask.new_ones(batch, 1), clue_mask], dim=1)
        for layer in self.layers:
            # The null key is prepended for the patch->clue attention only; it is not updated.
            clues_with_null = torch.cat([null, clues], dim=1)
            clues_with_null, patches = layer(clues_with_null, with_null_mask, patches, patch_mask, globals_, global_mask)
            clues = clues_with_null[:, 1:]
        return clues, patches


# ---------------------------------------------------------------------------------------------
# 4. Models
# ---------------------------------------------------------------------------------------------


class TRRGPreTrainedModel(PreTrainedModel):
    base_model_prefix = "trrg"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True  # delegated to the composed backbones that support it
    # The attention implementation is the composed models' to choose. transformers checks these flags
    # in PreTrainedModel.__init__, before the backbones exist, so the class allows every implementation;
    # the model that decides (stage 2's LM, stage 1's text encoder) refuses what it cannot run (Gemma 2
    # has no "sdpa"), and each instance then carries that model's flags (``_follow_attention_support``).
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # A folder saved before the training-distribution statistics existed: not fitted ("unknown"), not an error.
    _keys_to_ignore_on_load_missing = [r"training_distribution\."]
    # Losses are per-batch means (LM tokens, diseases, contrastive pairs); the Trainer scales them
    # for gradient accumulation instead of passing num_items_in_batch.
    accepts_loss_kwargs = False

    def __init__(self, config, *inputs, **kwargs):
        super().__init__(config, *inputs, **kwargs)
        # from_pretrained reads the checkpoint layout through _CHECKPOINT_LAYOUT; the Trainer reloads its
        # checkpoints (--resume, load_best_model_at_end) with load_state_dict, which this hook makes read it too.
        self.register_load_state_dict_pre_hook(_perception_keys_from_checkpoint_layout)

    # The perception's parts under the names the checkpoints, the trainers and older code use.
    @property
    def vision_model(self) -> TRRGVisionEncoder:
        return self.perception.vision_model

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.perception.logit_scale

    @property
    def disease_pos_weight(self) -> torch.Tensor:
        return self.perception.disease_pos_weight

    def post_init(self):
        super().post_init()
        # transformers gathers _no_split_modules from direct children only; the vision backbone sits
        # inside TRRGVisionEncoder, and its blocks must not be cut across devices either.
        for module in self.modules():
            if isinstance(module, PreTrainedModel) and module is not self:
                self._no_split_modules.update(module._no_split_modules or ())

    def _follow_attention_support(self, deciding_model: PreTrainedModel) -> None:
        for flag in ("_supports_sdpa", "_supports_flash_attn", "_supports_flex_attn", "_supports_attention_backend"):
            setattr(self, flag, getattr(deciding_model, flag))

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, TRRGClueInjector):
            # LLM clue tokens at the LLM's word-embedding init scale; interaction clues at unit scale.
            std = getattr(getattr(self.config, "text_config", None), "initializer_range", 0.02)
            init.normal_(module.token_table, std=std)
            init.normal_(module.state_table, std=1.0)
        elif isinstance(module, TRRGClueInteraction):
            init.zeros_(module.null_key)
        elif isinstance(module, TRRGGate):
            init.zeros_(module.gate)
        elif isinstance(module, TRRGPerception):
            init.constant_(module.logit_scale, math.log(getattr(self.config, "logit_scale_init", 1 / 0.07)))
            init.ones_(module.disease_pos_weight)
        elif isinstance(module, TRRGTrainingDistribution):  # missing from a folder: not fitted
            for buffer in module.buffers():
                init.zeros_(buffer)
        elif isinstance(module, TRRGForConditionalGeneration):
            init.zeros_(module.prompt_bank)
            init.normal_(module.consistency_weight, std=getattr(self.config.text_config, "initializer_range", 0.02))
            init.zeros_(module.consistency_bias)


class TRRGContrastiveModel(TRRGPreTrainedModel):
    """Stage 1: image encoder + text encoder contrasted on report sentences and disease prompts.

    After training it is a zero-shot disease classifier: ``predict_diseases`` compares the image
    with "there is X ." and "there is no X .".
    """

    config_class = TRRGContrastiveConfig
    config: TRRGContrastiveConfig

    def __init__(self, config: TRRGContrastiveConfig):
        super().__init__(config)
        # The vision encoder, the text encoder, then the projections: the order the seeded presets draw
        # their random init in (ablation arms and reruns are paired by seed).
        vision_model = TRRGVisionEncoder(config.vision_config, token_grid=None)
        self.text_model = AutoModel.from_config(config.text_config)
        self._follow_attention_support(self.text_model)
        self.perception = TRRGPerception(config, vision_model)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.post_init()

    def clamp_logit_scale(self) -> None:
        """Called after each optimizer step (open_clip does the same): keeps the temperature sane."""
        self.perception.clamp_logit_scale(self.config.logit_scale_max)

    def get_image_embeds(self, pixel_values: torch.Tensor, view_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, views, 3, H, W) -> (batch, projection_dim), L2-normalised study embedding."""
        return self._image_embeddings(pixel_values, view_mask).study_embeds

    def _image_embeddings(self, pixel_values, view_mask) -> TRRGJointEmbeddings:
        view_mask = _default_view_mask(pixel_values, view_mask)
        return self.perception.embed(self.perception.vision_model(pixel_values, view_mask), view_mask)

    def get_text_embeds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(texts, length) -> (texts, projection_dim), L2-normalised mean-pooled sentence embedding."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(self.text_projection(masked_mean(hidden, attention_mask, dim=1)), dim=-1)

    def encode_prompt_bank(self, prompt_input_ids: torch.Tensor, prompt_attention_mask: torch.Tensor) -> torch.Tensor:
        """Tokenised prompts (2 * diseases, length), ordered [d0+, d0-, d1+, ...] -> (diseases, 2, dim)."""
        embeds = self.get_text_embeds(prompt_input_ids, prompt_attention_mask)
        return embeds.reshape(-1, 2, embeds.shape[-1])

    @torch.no_grad()
    def predict_diseases(
        self, pixel_values: torch.Tensor, view_mask: torch.Tensor | None, prompt_bank: torch.Tensor,
        return_maps: bool = False,
    ) -> torch.Tensor | TRRGDiseasePerception:
        """(batch, diseases) zero-shot probabilities from positive vs negated prompts; with
        ``return_maps`` a ``TRRGDiseasePerception`` with the per-view evidence maps too."""
        view_mask = _default_view_mask(pixel_values, view_mask)
        features = self.perception.vision_model(pixel_values, view_mask, self.perception.statistics_layers)
        perception = self.perception(features, view_mask, prompt_bank, return_maps)
        return perception if return_maps else perception.disease_probs

    def attribution_maps(self, pixel_values: torch.Tensor, view_mask: torch.Tensor | None,
                         prompt_bank: torch.Tensor) -> torch.Tensor:
        """(batch, views, diseases, h, w): where each disease's zero-shot logit comes from, on the backbone's
        finest grid (``TRRGPerception.attribution_maps``)."""
        return self.perception.attribution_maps(pixel_values, _default_view_mask(pixel_values, view_mask), prompt_bank)

    def forward(
        self,
        pixel_values: torch.Tensor,
        view_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        prompt_input_ids: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        disease_labels: torch.Tensor | None = None,
        disease_label_mask: torch.Tensor | None = None,
        sentence_group_ids: torch.Tensor | None = None,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs,
    ) -> TRRGContrastiveOutput:
        """
        Args:
            pixel_values: (batch, views, 3, H, W); view_mask: (batch, views), 1 for real views.
            input_ids / attention_mask: one report sentence per study, (batch, length).
            prompt_input_ids / prompt_attention_mask: the disease prompts, (2 * diseases, length).
            disease_labels: (batch, diseases) in {0, 1} (uncertain mapped by the collator);
            disease_label_mask: (batch, diseases), 0 where a label should not count.
            sentence_group_ids: (batch,) ids equal for equal sentences (e.g. a hash of the text);
                without them, equal token sequences define the positives.
            gather: under several processes, a function that all-gathers a tensor along dim 0 (the
                trainer's ``gather_for_global_loss``): the sentence loss is then computed over the
                global batch, with the sentence_group_ids gathered too.
        """
        view_mask = _default_view_mask(pixel_values, view_mask)
        features = self.perception.vision_model(pixel_values, view_mask)
        embeddings = self.perception.embed(features, view_mask)
        image_embeds, patch_embeds, patch_mask = embeddings.study_embeds, embeddings.patch_embeds, embeddings.patch_mask
        output = TRRGContrastiveOutput(image_embeds=image_embeds)
        losses = []
        if input_ids is not None:
            text_embeds = self.get_text_embeds(input_ids, attention_mask)
            output.text_embeds = text_embeds
            output.logits_per_image = self.sentence_logits(image_embeds, patch_embeds, patch_mask, text_embeds)
            contrasted, positives = self._contrasted(
                (image_embeds, patch_embeds, patch_mask, text_embeds), input_ids, attention_mask, sentence_group_ids,
                gather,
            )
            output.sentence_loss = multi_positive_loss_from_logits(self.sentence_logits(*contrasted), positives)
            losses.append(self.config.sentence_loss_weight * output.sentence_loss)
        if prompt_input_ids is not None:
            prompt_bank = self.encode_prompt_bank(prompt_input_ids, prompt_attention_mask)
            output.disease_logits = self.perception.disease_logits(embeddings, prompt_bank)
            if disease_labels is not None:
                output.prompt_loss = weighted_disease_bce(
                    output.disease_logits, disease_labels, self.perception.disease_pos_weight, disease_label_mask
                )
                losses.append(self.config.prompt_loss_weight * output.prompt_loss)
                if self.config.first_view_prompt_loss_weight > 0:
                    output.first_view_prompt_loss = self._first_view_prompt_loss(
                        features, view_mask, prompt_bank, disease_labels, disease_label_mask
                    )
                    losses.append(self.config.first_view_prompt_loss_weight * output.first_view_prompt_loss)
        if losses:
            output.loss = torch.stack(losses).sum()
        return output


    def _first_view_prompt_loss(self, features, view_mask, prompt_bank, disease_labels, disease_label_mask):
        """The prompt loss of every multi-view study read from its first (frontal) view alone, from this
        pass's features, so training need not drop views to teach the one-view reading. A one-view
        study counts zero: the prompt loss already reads it that way, and counting it again would
        double its weight (on a one-view data set, the prompt loss's)."""
        first_view = first_view_features(features)
        logits = self.perception.disease_logits(self.perception.embed(first_view, view_mask[:, :1]), prompt_bank)
        several_views = view_mask[:, 1:].sum(dim=1) > 0
        return weighted_disease_bce(
            logits, disease_labels, self.perception.disease_pos_weight, disease_label_mask, study_weights=several_views
        )

    def sentence_logits(self, image_embeds, patch_embeds, patch_mask, text_embeds) -> torch.Tensor:
        """(images, texts) logits: the mean of the global (study . sentence) and the local (best
        patches . sentence) similarities, scaled; in fp32, as the perception computes the image side."""
        scale, text_embeds = self.perception.logit_scale.float().exp(), text_embeds.float()
        local = local_sentence_logits(patch_embeds, patch_mask, text_embeds, scale, self.config.local_pool_sharpness)
        return (scale * image_embeds @ text_embeds.t() + local) / 2

    @staticmethod
    def _contrasted(embeddings, input_ids, attention_mask, sentence_group_ids, gather):
        """The (image, patch, patch mask, text) embeddings the sentence loss contrasts and their
        positives: this batch's, or the global batch's when ``gather`` is given."""
        if gather is not None:
            if sentence_group_ids is None:
                raise ValueError("gather needs sentence_group_ids: token ids of different lengths cannot be gathered")
            embeddings = tuple(map(gather, embeddings))
            sentence_group_ids = gather(sentence_group_ids)
        if sentence_group_ids is not None:
            positives = sentence_group_ids[:, None] == sentence_group_ids[None, :]
        else:
            positives = same_text_mask(input_ids, attention_mask)
        return embeddings, positives


def _default_view_mask(pixel_values: torch.Tensor, view_mask: torch.Tensor | None) -> torch.Tensor:
    if pixel_values.dim() != 5:
        raise ValueError(
            f"pixel_values must be (batch, views, 3, H, W), got shape {tuple(pixel_values.shape)}: "
            "use TRRGProcessor / TRRGImageProcessor, or add a views dimension with pixel_values[:, None]"
        )
    if view_mask is None:
        return pixel_values.new_ones(pixel_values.shape[:2], dtype=torch.long)
    return view_mask


class TRRGForConditionalGeneration(TRRGPreTrainedModel, GenerationMixin):
    """Stage 2: writes the report with a causal LM from visual tokens and disease clue tokens.

    LLM input: [instruction] [<image> x views*tokens] [<clue> x diseases] "findings :" [report]
    loss = LM loss + consistency_loss_weight * disease-aware consistency loss (per-disease heads on
    the LLM's hidden state at each clue slot -> labels of the reference report).
    """

    config_class = TRRGConfig
    config: TRRGConfig
    # TRRG's own blocks that must sit whole on one device under a device_map: an interaction layer is a
    # residual block like a decoder layer; the clue injector's tables and the perception's projections
    # are read by their methods, not by a forward call that accelerate's hooks would move inputs for.
    # The backbones add theirs (post_init).
    _no_split_modules = ["TRRGClueInteractionLayer", "TRRGClueInjector", "TRRGPerception"]
    # Loaded with dtype=torch.bfloat16, the LM and the vision backbone take it, but the clue decisions
    # stay in fp32: they compare zero-shot probabilities with per-observation thresholds, and bf16 keeps
    # ~3 significant digits. "_strict": transformers 5 upcasts the plain list for fp16 only; the plain
    # list is what quantizers leave unquantized.
    _keep_in_fp32_modules_strict = ["clue_injector", "prompt_bank", "visual_projection", "patch_projection",
                                    "logit_scale", "disease_pos_weight", "training_distribution"]
    _keep_in_fp32_modules = _keep_in_fp32_modules_strict

    def __init__(self, config: TRRGConfig):
        super().__init__(config)
        clue = config.clue_config
        # register_for_auto_class keeps one Auto class per model class (AutoModel, at the end of this
        # file); the image-text-to-text task class joins it in the auto_map saved with the config.
        config.auto_map = {**(getattr(config, "auto_map", None) or {}),
                           "AutoModelForImageTextToText": f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}"}
        # pipeline("image-text-to-text", model=folder, trust_remote_code=True) reads this to build the
        # report pipeline shipped beside this file (see ``report_pipeline``).
        config.custom_pipelines = {"image-text-to-text": {"impl": "pipeline_trrg.TRRGReportPipeline",
                                                          "pt": ["AutoModelForImageTextToText"], "type": "multimodal"}}
        # The LLM is built first so that its random init does not depend on which clue modules an
        # ablation switches on (paired seeds: every arm starts from the same LLM weights).
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self._follow_attention_support(self.language_model)
        llm_width = config.text_config.hidden_size
        # Stage 1's zero-shot perception (vision encoder, projections, temperature) and its prompt bank.
        self.perception = TRRGPerception(config, TRRGVisionEncoder(config.vision_config, token_grid=config.image_token_grid))
        self.register_buffer("prompt_bank", torch.zeros(config.num_diseases, 2, config.projection_dim))
        vision = self.perception.vision_model
        # Visual path: backbone width -> clue width (where the interaction happens) -> LLM width.
        self.visual_adapter = nn.Sequential(nn.Linear(vision.hidden_size, clue.hidden_size), nn.GELU())
        self.multi_modal_projector = nn.Linear(clue.hidden_size, llm_width)
        # Clue path: decisions -> (disease, state) tokens; interaction; per-disease consistency heads.
        self.clue_injector = TRRGClueInjector(clue, config.num_diseases, config.projection_dim, llm_width)
        self.global_adapter = nn.Sequential(nn.Linear(vision.global_size, clue.hidden_size), nn.GELU())
        self.clue_interaction = TRRGClueInteraction(clue) if clue.use_clue_interaction else None
        self.clue_projector = nn.Linear(clue.hidden_size, llm_width)
        self.clue_output_gate = TRRGGate()
        self.consistency_weight = nn.Parameter(torch.empty(config.num_diseases, llm_width))
        self.consistency_bias = nn.Parameter(torch.zeros(config.num_diseases))
        self.post_init()

    # -- freezing -------------------------------------------------------------------------------
    def freeze_perception(self) -> None:
        """Freeze the stage-1 perception (vision encoder, projections, temperature) and keep it in eval
        mode while the rest trains, so batch-norm statistics stay those of stage 1."""
        self.perception.requires_grad_(False)
        self._perception_frozen = True
        self.perception.eval()

    @property
    def perception_frozen(self) -> bool:
        return getattr(self, "_perception_frozen", False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.perception_frozen:
            self.perception.eval()
        return self

    # -- embeddings, so resize_token_embeddings / generate / peft see the LLM's ------------------
    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value):
        self.language_model.set_output_embeddings(value)

    # -- zero-shot perception ----------------------------------------------------------------
    def perception_from_features(self, features: VisionFeatures, view_mask: torch.Tensor,
                                 return_maps: bool = False) -> TRRGDiseasePerception:
        """The zero-shot perception of the vision encoder's features against the stored prompt bank."""
        return self.perception(features, view_mask, self.prompt_bank, return_maps)

    @property
    def clue_thresholds(self) -> torch.Tensor:
        """(diseases,) decision thresholds, from the config (the single source of truth)."""
        values = self.config.clue_config.thresholds_for(self.config.num_diseases)
        return torch.tensor(values, device=self.prompt_bank.device)

    @torch.no_grad()
    def predict_diseases(self, pixel_values: torch.Tensor, view_mask: torch.Tensor | None = None,
                         return_maps: bool = False) -> torch.Tensor | TRRGDiseasePerception:
        """(batch, diseases) zero-shot probabilities (the perception the clues are decided from); with
        ``return_maps`` a ``TRRGDiseasePerception`` with the per-view evidence maps too."""
        view_mask = _default_view_mask(pixel_values, view_mask)
        features = self.perception.vision_model(pixel_values, view_mask, self.perception.statistics_layers)
        perception = self.perception_from_features(features, view_mask, return_maps)
        return perception if return_maps else perception.disease_probs

    def attribution_maps(self, pixel_values: torch.Tensor, view_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, views, diseases, h, w): where each disease's zero-shot logit (its clue) comes from, on the
        backbone's finest grid (``TRRGPerception.attribution_maps``)."""
        view_mask = _default_view_mask(pixel_values, view_mask)
        return self.perception.attribution_maps(pixel_values, view_mask, self.prompt_bank)

    @property
    def perception_is_trained(self) -> bool:
        """False while the prompt bank is all zeros: the model was built without stage 1 (``trrg init``, or a
        preset in Python) and never bridged, so every study gets the same disease probabilities and its
        clues say nothing about the image."""
        return bool(self.prompt_bank.abs().amax() > 0)

    @torch.no_grad()
    def predict_clues(self, pixel_values: torch.Tensor, view_mask: torch.Tensor | None = None,
                      return_maps: bool = False, clue_probs: torch.Tensor | None = None) -> TRRGCluePrediction:
        """The perception and the decisions the model injects (``out["disease_probs"]``,
        ``out.clue_states``; ``evidence_maps`` with ``return_maps``), and the vision features they came
        from, for ``generate``. ``clue_probs`` (batch, diseases) replace the zero-shot probabilities, as in
        ``forward``: the decisions are then taken from them with the same thresholds."""
        view_mask = _default_view_mask(pixel_values, view_mask)
        features = self.perception.vision_model(pixel_values, view_mask, self.perception.statistics_layers)
        perception = self.perception_from_features(features, view_mask, return_maps)
        probs = perception.disease_probs if clue_probs is None else clue_probs.to(perception.disease_probs)
        return TRRGCluePrediction(disease_probs=probs, clue_states=clue_states_from_probs(probs, self.clue_thresholds),
                                  evidence_maps=perception.evidence_maps, vision_features=features,
                                  familiarity=perception.familiarity)

    def report_pipeline(self, processor, **kwargs):
        """This model's ``TRRGReportPipeline`` (studies in, one ``TRRGReport`` per study out), for a model
        and processor already loaded: what ``pipeline("image-text-to-text", model=folder,
        trust_remote_code=True)`` builds from a folder. The model stays on its device."""
        from .pipeline_trrg import TRRGReportPipeline  # the import also ships pipeline_trrg.py in saved folders

        if getattr(self, "hf_device_map", None) is None:
            kwargs.setdefault("device", self.device)
        return TRRGReportPipeline(model=self, processor=processor, **kwargs)

    # -- multimodal embedding ----------------------------------------------------------------
    def get_multimodal_features(
        self,
        pixel_values: torch.Tensor | None,
        view_mask: torch.Tensor,
        clue_probs: torch.Tensor | None = None,
        clue_states: torch.Tensor | None = None,
        clue_embeds: torch.Tensor | None = None,
        clue_embeds_mask: torch.Tensor | None = None,
        vision_features: VisionFeatures | None = None,
    ) -> TRRGMultimodalFeatures:
        """Visual tokens and clue tokens in the LLM's width, plus the perception that made them."""
        features = vision_features
        if features is None:
            features = self.perception.vision_model(pixel_values, view_mask)
        batch, views, tokens, _ = features.patch_tokens.shape
        patches = self.visual_adapter(features.patch_tokens.flatten(1, 2))  # (batch, views*tokens, hidden)
        patch_mask = view_mask.bool().repeat_interleave(tokens, dim=1)
        # fp32 like the perception's, whatever the weights' dtype: the decisions compare them with thresholds
        probs = self.perception_from_features(features, view_mask).disease_probs if clue_probs is None else clue_probs.float()
        states = resolve_clue_states(clue_states_from_probs(probs, self.clue_thresholds), clue_states)
        out = TRRGMultimodalFeatures(disease_probs=probs, clue_states=states)

        clue = self.config.clue_config
        if clue.use_clue_injection or self.clue_interaction is not None:
            clues = self.clue_injector.interaction_clues(states, probs, self.prompt_bank).to(patches.dtype)
            if self.clue_interaction is not None:
                clues, patches = self._interact(clues, patches, patch_mask, features, view_mask, clue_embeds, clue_embeds_mask)
            if clue.use_clue_injection:
                tokens_in = self.clue_injector.clue_tokens(states)
                out.clue_tokens = tokens_in + self.clue_output_gate(self.clue_projector(clues)).to(tokens_in.dtype)

        visual = self.multi_modal_projector(patches).reshape(batch, views, tokens, -1)
        out.visual_tokens = visual[view_mask.bool()].reshape(-1, visual.shape[-1])
        return out

    def _interact(self, clues, patches, patch_mask, features, view_mask, clue_embeds, clue_embeds_mask):
        """Run the clue interaction over the disease clues plus any extra clues; return the disease
        clues and the updated patch tokens."""
        batch, num_disease_clues = clues.shape[:2]
        all_clues, all_mask = clues, clues.new_ones(clues.shape[:2], dtype=torch.bool)
        if clue_embeds is not None:
            extra_mask = (torch.ones(clue_embeds.shape[:2], dtype=torch.bool, device=clue_embeds.device)
                          if clue_embeds_mask is None else clue_embeds_mask.bool())
            all_clues = torch.cat([clues, self.clue_injector.embed_extra(clue_embeds).to(clues.dtype)], dim=1)
            all_mask = torch.cat([all_mask, extra_mask], dim=1)
        globals_ = self.global_adapter(torch.cat([features.study_embeds[:, None], features.view_embeds], dim=1))
        global_mask = torch.cat([view_mask.new_ones(batch, 1), view_mask], dim=1).bool()
        all_clues, patches = self.clue_interaction(all_clues, all_mask, patches, patch_mask, globals_, global_mask)
        return all_clues[:, :num_disease_clues], patches

    def _merge_placeholders(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor,
                            features: TRRGMultimodalFeatures) -> torch.Tensor:
        """Scatter visual and clue tokens into their placeholder positions (LLaVA style)."""
        image_positions = input_ids == self.config.image_token_id
        visual = features.visual_tokens
        if int(image_positions.sum()) != visual.shape[0]:
            raise ValueError(
                f"the prompts hold {int(image_positions.sum())} <image> tokens but the images give {visual.shape[0]} "
                f"visual tokens ({self.config.image_token_grid ** 2} per view): build inputs with TRRGProcessor(images=..., "
                "text=...) so each study's prompt has one <image> block per view"
            )
        inputs_embeds = inputs_embeds.masked_scatter(image_positions.unsqueeze(-1), visual.to(inputs_embeds.dtype))
        clue_positions = input_ids == self.config.clue_token_id
        clue_tokens = features.clue_tokens
        expected = 0 if clue_tokens is None else clue_tokens.shape[0] * clue_tokens.shape[1]
        if int(clue_positions.sum()) != expected:
            raise ValueError(
                f"the prompts hold {int(clue_positions.sum())} <clue> tokens but the model injects {expected} "
                f"({self.config.num_clue_tokens} per study): the processor's num_clue_tokens must equal the "
                "model config's num_clue_tokens (build the processor from this model's folder)"
            )
        if clue_tokens is not None:
            inputs_embeds = inputs_embeds.masked_scatter(clue_positions.unsqueeze(-1), clue_tokens.to(inputs_embeds.dtype))
        return inputs_embeds

    def _wants_consistency(self, features, disease_labels) -> bool:
        return (disease_labels is not None and features is not None and features.clue_tokens is not None
                and self.config.clue_config.consistency_loss_weight > 0)

    def _clue_slot_logits(self, input_ids: torch.Tensor, last_hidden: torch.Tensor) -> torch.Tensor:
        """Per-disease consistency logits read from the LLM's last hidden state at each clue slot."""
        slots = input_ids == self.config.clue_token_id
        hidden = last_hidden[slots].reshape(input_ids.shape[0], self.config.num_clue_tokens, -1)
        return per_disease_logits(hidden, self.consistency_weight, self.consistency_bias)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        view_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        disease_labels: torch.Tensor | None = None,
        disease_label_mask: torch.Tensor | None = None,
        clue_probs: torch.Tensor | None = None,
        clue_states: torch.Tensor | None = None,
        clue_embeds: torch.Tensor | None = None,
        clue_embeds_mask: torch.Tensor | None = None,
        vision_features: VisionFeatures | None = None,
        label_weights: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> TRRGCausalLMOutputWithPast:
        """
        Args:
            input_ids: (batch, length) prompt (+ report when training) with <image>/<clue> placeholders.
            pixel_values: (batch, views, 3, H, W); view_mask: (batch, views), 1 for real views.
            labels: (batch, length), -100 on the prompt (the processor masks it).
            disease_labels: (batch, diseases) labels of the reference report, for the consistency loss.
            clue_probs: (batch, diseases) to use instead of the zero-shot perception (e.g. from another
                classifier); the clue decisions are then taken from them with the same thresholds.
            clue_states: (batch, diseases) decisions to inject: 1 present, 0 absent, -1 the model's own
                (training feeds reference labels for part of the studies this way).
            clue_embeds / clue_embeds_mask: (batch, k, projection_dim) / (batch, k), any number of extra
                clues in the stage-1 joint space; they take part in the clue interaction.
            vision_features: precomputed output of ``vision_model`` (a frozen encoder's features, cached
                by the trainer) instead of ``pixel_values``.
            label_weights: (batch, length) weight of each label token in the LM loss (the trainer
                up-weights sentences that state a finding); None: the plain token mean.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        features = None
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(self._embeddable_ids(input_ids))
        if pixel_values is not None or vision_features is not None:
            if input_ids is None:
                raise ValueError("pixel_values need input_ids with <image> placeholders to place them")
            if vision_features is None:
                view_mask = _default_view_mask(pixel_values, view_mask)
            features = self.get_multimodal_features(pixel_values, view_mask, clue_probs, clue_states, clue_embeds,
                                                    clue_embeds_mask, vision_features)
            inputs_embeds = self._merge_placeholders(input_ids, inputs_embeds, features)
        elif input_ids is not None and bool((input_ids == self.config.image_token_id).any()):
            raise ValueError("input_ids hold <image> placeholders but no pixel_values were given")

        consistency_wanted = self._wants_consistency(features, disease_labels)
        output_hidden_states = kwargs.pop("output_hidden_states", None) or consistency_wanted
        lm_output = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            labels=labels if label_weights is None else None,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        lm_loss = lm_output.loss
        if label_weights is not None and labels is not None:
            lm_loss = weighted_lm_loss(lm_output.logits, labels, label_weights)
        clue_logits = consistency = None
        if consistency_wanted:
            clue_logits = self._clue_slot_logits(input_ids, lm_output.hidden_states[-1])
            consistency = weighted_disease_bce(clue_logits.float(), disease_labels, self.perception.disease_pos_weight,
                                               disease_label_mask)
        loss = lm_loss
        if consistency is not None and loss is not None:
            loss = loss + self.config.clue_config.consistency_loss_weight * consistency
        return TRRGCausalLMOutputWithPast(
            loss=loss,
            lm_loss=lm_loss,
            consistency_loss=consistency,
            logits=lm_output.logits,
            cache=lm_output.get("cache"),
            hidden_states=lm_output.get("hidden_states"),
            attentions=lm_output.get("attentions"),
            disease_probs=features.disease_probs if features is not None else None,
            clue_states=features.clue_states if features is not None else None,
            clue_logits=clue_logits,
        )

    def _embeddable_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Placeholders are overwritten after the lookup; map them to a valid id for the lookup."""
        placeholders = (input_ids == self.config.image_token_id) | (input_ids == self.config.clue_token_id)
        return input_ids.masked_fill(placeholders, 0)

    _PREFILL_ONLY_INPUTS = ("pixel_values", "view_mask", "clue_probs", "clue_states", "clue_embeds",
                            "clue_embeds_mask", "vision_features", "disease_labels", "disease_label_mask",
                            "label_weights")

    def prepare_inputs_for_generation(self, input_ids, is_first_iteration: bool | None = False, **kwargs):
        """Images and clues enter only at prefill: after that the cache holds them (beam search,
        sampling and streaming then work with stock ``generate()``)."""
        model_inputs = super().prepare_inputs_for_generation(input_ids, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            for name in self._PREFILL_ONLY_INPUTS:
                model_inputs.pop(name, None)
        return model_inputs

    def _expand_inputs_for_generation(self, expand_size: int = 1, is_encoder_decoder: bool = False,
                                      input_ids: torch.Tensor | None = None, **model_kwargs):
        """Beam search and num_return_sequences repeat each study's inputs; ``vision_features`` (a
        ``VisionFeatures``, not a tensor) are repeated with them, so beams need no second encoding."""
        features = model_kwargs.pop("vision_features", None)
        input_ids, model_kwargs = super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids,
                                                                        **model_kwargs)
        if features is not None and expand_size > 1:  # layer_statistics (a fitted model's) is a tuple of tensors
            features = VisionFeatures(**{
                name: value.repeat_interleave(expand_size, dim=0) if torch.is_tensor(value)
                else tuple(part.repeat_interleave(expand_size, dim=0) for part in value)
                for name, value in features.items()})
        if features is not None:
            model_kwargs["vision_features"] = features
        return input_ids, model_kwargs


__all__ = [
    "TRRGContrastiveModel",
    "TRRGForConditionalGeneration",
    "TRRGPreTrainedModel",
    "TRRGPerception",
    "TRRGJointEmbeddings",
    "TRRGContrastiveOutput",
    "TRRGCausalLMOutputWithPast",
    "TRRGDiseasePerception",
    "TRRGCluePrediction",
    "TRRGMultimodalFeatures",
    "gradient_attribution",
    "multi_positive_contrastive_loss",
    "multi_positive_loss_from_logits",
    "smooth_max",
    "first_view_features",
    "local_disease_contrast",
    "local_disease_logits",
    "local_sentence_logits",
    "patch_embeddings",
    "evidence_maps",
    "disease_logits_from_prompt_bank",
    "weighted_disease_bce",
    "positive_class_weight",
    "same_text_mask",
    "soft_clue_embeddings",
    "clue_states_from_probs",
    "resolve_clue_states",
    "state_embeddings",
    "per_disease_logits",
    "weighted_lm_loss",
    "masked_mean",
]

# ---------------------------------------------------------------------------------------------
# The checkpoint layout
# ---------------------------------------------------------------------------------------------

# Checkpoints name the perception's parts at their top level ("vision_model.*", "logit_scale", ...), as
# they did before ``TRRGPerception`` held them. transformers renames them on load and back on save
# (save_pretrained's default save_original_format=True), so every TRRG folder, older ones included, has
# this one layout.
_CHECKPOINT_LAYOUT = [WeightRenaming(f"^{name}", f"perception.{name}") for name in TRRGPerception.checkpoint_names]
for _model_class in (TRRGContrastiveModel, TRRGForConditionalGeneration):
    # overwrite: the package's classes and a folder's remote-code copy register the same names
    register_checkpoint_conversion_mapping(_model_class.__name__, _CHECKPOINT_LAYOUT, overwrite=True)


def _perception_keys_from_checkpoint_layout(module, state_dict, prefix, *args) -> None:
    """``load_state_dict`` pre-hook: a state dict in the checkpoint layout (as the Trainer reads a checkpoint
    back from model.safetensors) gets the module names; one with the module names is left as it is."""
    for name in TRRGPerception.checkpoint_names:
        for key in [key for key in state_dict if key == prefix + name or key.startswith(f"{prefix}{name}.")]:
            state_dict[f"{prefix}perception.{key[len(prefix):]}"] = state_dict.pop(key)


# Hub bundle: saving a model copies these files and writes auto_map, so users load it with
# AutoModel.from_pretrained(folder_or_hub_id, trust_remote_code=True).
TRRGContrastiveModel.register_for_auto_class("AutoModel")
TRRGForConditionalGeneration.register_for_auto_class("AutoModel")  # and AutoModelForImageTextToText: see __init__
