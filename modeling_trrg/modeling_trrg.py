"""TRRG models: stage-1 contrastive pre-training and stage-2 clue-enhanced report generation.

Part of the hub bundle (remote code): imports only torch, transformers and sibling files.

Layout of this file:
1. typed outputs
2. pure functions for the math (losses, zero-shot logits, masking), tested without a model
3. blocks: the vision encoder wrapper, the clue injector, the clue interaction module
4. ``TRRGContrastiveModel`` (stage 1) and ``TRRGForConditionalGeneration`` (stage 2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_trrg import TRRGClueConfig, TRRGConfig, TRRGContrastiveConfig

# ---------------------------------------------------------------------------------------------
# 1. Outputs
# ---------------------------------------------------------------------------------------------


@dataclass
class TRRGContrastiveOutput(ModelOutput):
    """Stage-1 output. ``loss`` = sentence_loss * w_s + prompt_loss * w_p (the parts are logged apart)."""

    loss: torch.Tensor | None = None
    sentence_loss: torch.Tensor | None = None
    prompt_loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None  # (batch, batch) scaled cosine image->sentence
    image_embeds: torch.Tensor | None = None  # (batch, projection_dim), L2-normalised
    text_embeds: torch.Tensor | None = None  # (batch, projection_dim), L2-normalised
    disease_logits: torch.Tensor | None = None  # (batch, diseases): logit of p(disease present)


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
    disease_probs: torch.Tensor | None = None  # (batch, diseases): zero-shot clue probabilities used
    clue_logits: torch.Tensor | None = None  # (batch, diseases): consistency head on the clue tokens
    clue_mask: torch.Tensor | None = None  # (batch, diseases): which disease clues were injected


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
    logits = logit_scale * image_embeds @ text_embeds.t()  # (n_images, n_texts)
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


def positive_class_weight(prevalence: torch.Tensor, power: float) -> torch.Tensor:
    """((1 - prevalence) / prevalence) ** power, the positive weight that counters rare findings.

    power 0 gives plain BCE, 1 balances positives and negatives, 0.5 (our default) is in between.
    """
    prevalence = prevalence.clamp(1e-3, 1 - 1e-3)
    return ((1 - prevalence) / prevalence) ** power


def weighted_disease_bce(
    logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-disease binary cross-entropy, positives weighted by ``pos_weight`` (diseases,), entries
    where ``mask`` is false ignored (e.g. an observation the labeler could not decide)."""
    losses = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=pos_weight, reduction="none")
    if mask is None:
        return losses.mean()
    mask = mask.to(losses.dtype)
    return (losses * mask).sum() / mask.sum().clamp_min(1.0)


def soft_clue_embeddings(probs: torch.Tensor, prompt_bank: torch.Tensor) -> torch.Tensor:
    """Clue embedding per disease: p * positive prompt + (1 - p) * negated prompt.

    Soft rather than thresholded, because for rare findings a well-ranked classifier (high AUROC)
    can still sit below 0.5, and a hard clue would drop exactly those findings.

    Args:
        probs: (batch, diseases) in [0, 1].
        prompt_bank: (diseases, 2, dim).
    Returns:
        (batch, diseases, dim).
    """
    probs = probs.unsqueeze(-1)
    return probs * prompt_bank[:, 0] + (1 - probs) * prompt_bank[:, 1]


# ---------------------------------------------------------------------------------------------
# 3. Blocks
# ---------------------------------------------------------------------------------------------


def vision_feature_size(vision_config) -> int:
    """Channel width of a transformers vision backbone's last hidden state."""
    hidden_sizes = getattr(vision_config, "hidden_sizes", None)
    if hidden_sizes:
        return hidden_sizes[-1]
    return vision_config.hidden_size


@dataclass
class VisionFeatures(ModelOutput):
    patch_tokens: torch.Tensor | None = None  # (batch, views, tokens, width); padded views are zero
    view_embeds: torch.Tensor | None = None  # (batch, views, 2 * width): per-view [average ; max] pool
    study_embeds: torch.Tensor | None = None  # (batch, 2 * width): masked mean over the study's views


class TRRGVisionEncoder(nn.Module):
    """Any transformers vision backbone, run on the real views only (padded views never reach batch
    norm), returning patch tokens on a fixed grid and global embeddings.

    The global embedding of a view concatenates average and max pooling: average pooling alone
    dilutes small findings (a nodule, a line, a pneumothorax rim) into the whole image.
    """

    def __init__(self, vision_config, token_grid: int | None):
        super().__init__()
        self.backbone = AutoModel.from_config(vision_config)
        self.token_grid = token_grid
        self.hidden_size = vision_feature_size(vision_config)
        self.global_size = 2 * self.hidden_size

    def _feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) -> (n, width, h, w), whether the backbone is convolutional or a transformer."""
        hidden = self.backbone(pixel_values=pixel_values).last_hidden_state
        if hidden.dim() == 4:
            return hidden
        tokens = hidden.shape[1]
        side = math.isqrt(tokens)
        if side * side != tokens:  # a leading CLS token (ViT): drop it, keep the patch grid
            hidden, side = hidden[:, 1:], math.isqrt(tokens - 1)
        return hidden.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[2], side, side)

    def forward(self, pixel_values: torch.Tensor, view_mask: torch.Tensor) -> VisionFeatures:
        batch, views = pixel_values.shape[:2]
        real = view_mask.reshape(-1).bool()
        feature_map = self._feature_map(pixel_values.reshape(batch * views, *pixel_values.shape[2:])[real])
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
        )


class TRRGClueInjector(nn.Module):
    """Turns zero-shot disease perception into clue tokens, one per disease.

    clue_d = MLP([p_d * bank+_d + (1 - p_d) * bank-_d ; p_d]) + disease_embedding_d, or the learned
    "no clue" embedding (+ disease embedding) where the clue is masked out. With
    ``learned_state_embeddings`` it adds p_d * E+_d + (1 - p_d) * E-_d, learned embeddings of "present"
    and "absent" per disease that carry the probability at embedding scale from the first step (the
    MLP's output starts near zero, so without them the clue tokens barely differ with p at first).
    Extra clues (any number, e.g. stage-1 embeddings of indication or prior-report sentences) are
    projected into the same space; they join the interaction but get no LLM slot.
    """

    def __init__(self, config: TRRGClueConfig, num_diseases: int, projection_dim: int):
        super().__init__()
        hidden = config.hidden_size
        self.clue_mlp = nn.Sequential(nn.Linear(projection_dim + 1, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.disease_embedding = nn.Embedding(num_diseases, hidden)
        self.null_clue = nn.Parameter(torch.zeros(hidden))
        self.extra_clue_proj = nn.Linear(projection_dim, hidden)
        # rows [d, 0] present, [d, 1] absent
        self.state_embedding = nn.Embedding(2 * num_diseases, hidden) if config.learned_state_embeddings else None

    def forward(
        self, probs: torch.Tensor, prompt_bank: torch.Tensor, clue_mask: torch.Tensor
    ) -> torch.Tensor:
        """(batch, diseases) probs + (batch, diseases) bool mask -> (batch, diseases, hidden)."""
        clue_inputs = torch.cat([soft_clue_embeddings(probs, prompt_bank), probs.unsqueeze(-1)], dim=-1)
        clues = self.clue_mlp(clue_inputs)
        if self.state_embedding is not None:
            states = self.state_embedding.weight.to(clues.dtype).reshape(-1, 2, clues.shape[-1])
            clues = clues + soft_clue_embeddings(probs.to(clues.dtype), states)
        clues = torch.where(clue_mask.unsqueeze(-1), clues, self.null_clue.to(clues.dtype))
        return clues + self.disease_embedding.weight.to(clues.dtype)

    def embed_extra(self, clue_embeds: torch.Tensor) -> torch.Tensor:
        """(batch, k, projection_dim) -> (batch, k, hidden)."""
        return self.extra_clue_proj(clue_embeds)


class TRRGCrossAttention(nn.Module):
    """Pre-norm residual cross-attention: queries attend to a masked set of keys."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.norm_query = nn.LayerNorm(hidden)
        self.norm_key = nn.LayerNorm(hidden)
        self.attention = nn.MultiheadAttention(hidden, heads, batch_first=True)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        keys = self.norm_key(keys)
        attended, _ = self.attention(
            self.norm_query(queries), keys, keys, key_padding_mask=~key_mask.bool(), need_weights=False
        )
        return queries + attended


class TRRGFeedForward(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class TRRGClueInteractionLayer(nn.Module):
    """One layer of cross-modal clue interaction at two granularities.

    clues  <- global image embeddings (study + each view)     [global granularity]
    clues  <- patch tokens of every view                       [patch granularity]
    patches <- clues (+ an always-present null key, so an example with no clue is well defined)

    With ``gated``, the update of the patch tokens is scaled by tanh(g) with g initialised to 0
    (Flamingo-style), so at the start of stage 2 the visual tokens are exactly the stage-1 ones.
    """

    def __init__(self, hidden: int, heads: int, gated: bool = False):
        super().__init__()
        self.clue_to_global = TRRGCrossAttention(hidden, heads)
        self.clue_to_patch = TRRGCrossAttention(hidden, heads)
        self.patch_to_clue = TRRGCrossAttention(hidden, heads)
        self.clue_ffn = TRRGFeedForward(hidden)
        self.patch_ffn = TRRGFeedForward(hidden)
        self.patch_gate = nn.Parameter(torch.zeros(1)) if gated else None

    def forward(self, clues, clue_mask, patches, patch_mask, globals_, global_mask):
        clues = self.clue_to_global(clues, globals_, global_mask)
        clues = self.clue_to_patch(clues, patches, patch_mask)
        clues = self.clue_ffn(clues)
        updated = self.patch_ffn(self.patch_to_clue(patches, clues, clue_mask))
        if self.patch_gate is not None:
            updated = patches + torch.tanh(self.patch_gate).to(patches.dtype) * (updated - patches)
        return clues, updated


class TRRGClueInteraction(nn.Module):
    """Visual embeddings and any number of clue embeddings attend to each other (padded + masked)."""

    def __init__(self, config: TRRGClueConfig):
        super().__init__()
        self.null_key = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.layers = nn.ModuleList(
            TRRGClueInteractionLayer(config.hidden_size, config.num_heads, config.gated_interaction)
            for _ in range(config.num_layers)
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
    supports_gradient_checkpointing = False
    _supports_sdpa = True
    # Losses are per-batch means (LM tokens, diseases, contrastive pairs); the Trainer scales them
    # for gradient accumulation instead of passing num_items_in_batch.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, TRRGClueInjector):
            init.zeros_(module.null_clue)
        elif isinstance(module, TRRGClueInteraction):
            init.zeros_(module.null_key)
        elif isinstance(module, TRRGClueInteractionLayer) and module.patch_gate is not None:
            init.zeros_(module.patch_gate)
        elif isinstance(module, (TRRGContrastiveModel, TRRGForConditionalGeneration)):
            init.constant_(module.logit_scale, math.log(self._logit_scale_init()))
            init.ones_(module.disease_pos_weight)
            if isinstance(module, TRRGForConditionalGeneration):
                init.zeros_(module.prompt_bank)

    def _logit_scale_init(self) -> float:
        return getattr(self.config, "logit_scale_init", 1 / 0.07)


class TRRGContrastiveModel(TRRGPreTrainedModel):
    """Stage 1: image encoder + text encoder contrasted on report sentences and disease prompts.

    After training it is a zero-shot disease classifier: ``predict_diseases`` compares the image
    with "there is X ." and "there is no X .".
    """

    config_class = TRRGContrastiveConfig
    config: TRRGContrastiveConfig

    def __init__(self, config: TRRGContrastiveConfig):
        super().__init__(config)
        self.vision_model = TRRGVisionEncoder(config.vision_config, token_grid=None)
        self.text_model = AutoModel.from_config(config.text_config)
        self.visual_projection = nn.Linear(self.vision_model.global_size, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale_init)))
        # Set by the trainer from the training labels (positive_class_weight); saved with the weights.
        self.register_buffer("disease_pos_weight", torch.ones(config.num_diseases))
        self.post_init()

    def clamp_logit_scale(self) -> None:
        """Called after each optimizer step (open_clip does the same): keeps the temperature sane."""
        with torch.no_grad():
            self.logit_scale.clamp_(0, math.log(self.config.logit_scale_max))

    def get_image_embeds(self, pixel_values: torch.Tensor, view_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, views, 3, H, W) -> (batch, projection_dim), L2-normalised study embedding."""
        view_mask = _default_view_mask(pixel_values, view_mask)
        features = self.vision_model(pixel_values, view_mask)
        return F.normalize(self.visual_projection(features.study_embeds), dim=-1)

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
        self, pixel_values: torch.Tensor, view_mask: torch.Tensor | None, prompt_bank: torch.Tensor
    ) -> torch.Tensor:
        """(batch, diseases) zero-shot probabilities from positive vs negated prompts."""
        logits = disease_logits_from_prompt_bank(
            self.get_image_embeds(pixel_values, view_mask), prompt_bank, self.logit_scale.exp()
        )
        return torch.sigmoid(logits)

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
        """
        scale = self.logit_scale.exp()
        image_embeds = self.get_image_embeds(pixel_values, view_mask)
        output = TRRGContrastiveOutput(image_embeds=image_embeds)
        losses = []
        if input_ids is not None:
            text_embeds = self.get_text_embeds(input_ids, attention_mask)
            if sentence_group_ids is not None:
                positives = sentence_group_ids[:, None] == sentence_group_ids[None, :]
            else:
                positives = same_text_mask(input_ids, attention_mask)
            output.text_embeds = text_embeds
            output.logits_per_image = scale * image_embeds @ text_embeds.t()
            output.sentence_loss = multi_positive_contrastive_loss(image_embeds, text_embeds, scale, positives)
            losses.append(self.config.sentence_loss_weight * output.sentence_loss)
        if prompt_input_ids is not None:
            prompt_bank = self.encode_prompt_bank(prompt_input_ids, prompt_attention_mask)
            output.disease_logits = disease_logits_from_prompt_bank(image_embeds, prompt_bank, scale)
            if disease_labels is not None:
                output.prompt_loss = weighted_disease_bce(
                    output.disease_logits, disease_labels, self.disease_pos_weight, disease_label_mask
                )
                losses.append(self.config.prompt_loss_weight * output.prompt_loss)
        if losses:
            output.loss = torch.stack(losses).sum()
        return output


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
    loss = LM loss + consistency_loss_weight * disease-aware consistency loss (clue tokens -> labels
    of the reference report).
    """

    config_class = TRRGConfig
    config: TRRGConfig
    _checkpoint_conversion_mapping = {}

    def __init__(self, config: TRRGConfig):
        super().__init__(config)
        clue = config.clue_config
        self.vision_model = TRRGVisionEncoder(config.vision_config, token_grid=config.image_token_grid)
        vision_width = self.vision_model.hidden_size
        # Stage-1 zero-shot head: projection into the joint space, temperature, prompt bank.
        self.visual_projection = nn.Linear(self.vision_model.global_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(self._logit_scale_init())))
        self.register_buffer("prompt_bank", torch.zeros(config.num_diseases, 2, config.projection_dim))
        self.register_buffer("disease_pos_weight", torch.ones(config.num_diseases))
        # Visual path: backbone width -> clue width (where the interaction happens) -> LLM width.
        self.visual_adapter = nn.Sequential(nn.Linear(vision_width, clue.hidden_size), nn.GELU())
        self.global_adapter = nn.Sequential(nn.Linear(self.vision_model.global_size, clue.hidden_size), nn.GELU())
        self.clue_injector = TRRGClueInjector(clue, config.num_diseases, config.projection_dim)
        self.clue_interaction = TRRGClueInteraction(clue) if clue.use_clue_interaction else None
        self.consistency_head = nn.Linear(clue.hidden_size, 1)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        llm_width = config.text_config.hidden_size
        self.multi_modal_projector = nn.Linear(clue.hidden_size, llm_width)
        self.clue_projector = nn.Linear(clue.hidden_size, llm_width)
        self.post_init()

    # -- freezing -------------------------------------------------------------------------------
    def freeze_perception(self) -> None:
        """Freeze the stage-1 perception (vision encoder, projection, temperature) and keep it in eval
        mode while the rest trains, so batch-norm statistics stay those of stage 1."""
        for module in (self.vision_model, self.visual_projection):
            module.requires_grad_(False)
        self.logit_scale.requires_grad_(False)
        self._perception_frozen = True
        self.vision_model.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "_perception_frozen", False):
            self.vision_model.eval()
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
    def _disease_probs(self, study_embeds: torch.Tensor) -> torch.Tensor:
        image_embeds = F.normalize(self.visual_projection(study_embeds), dim=-1)
        return torch.sigmoid(disease_logits_from_prompt_bank(image_embeds, self.prompt_bank, self.logit_scale.exp()))

    @torch.no_grad()
    def predict_diseases(self, pixel_values: torch.Tensor, view_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, diseases) zero-shot probabilities (the clues the model would inject)."""
        view_mask = _default_view_mask(pixel_values, view_mask)
        return self._disease_probs(self.vision_model(pixel_values, view_mask).study_embeds)

    def _select_clues(self, probs: torch.Tensor) -> torch.Tensor:
        clue = self.config.clue_config
        if clue.clue_selection == "threshold":
            mask = probs >= clue.clue_threshold
        else:
            mask = torch.ones_like(probs, dtype=torch.bool)
        if self.training and clue.clue_dropout > 0:
            mask = mask & (torch.rand_like(probs) >= clue.clue_dropout)
        return mask

    # -- multimodal embedding ----------------------------------------------------------------
    def get_multimodal_features(
        self,
        pixel_values: torch.Tensor,
        view_mask: torch.Tensor,
        clue_probs: torch.Tensor | None = None,
        clue_embeds: torch.Tensor | None = None,
        clue_embeds_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Visual tokens and clue tokens in the LLM's width, plus the perception that made them.

        Returns a dict with ``visual_tokens`` (real views * tokens, llm width) in study order,
        ``clue_tokens`` (batch, diseases, llm width) or None, ``disease_probs``, ``clue_mask``,
        ``clue_logits``.
        """
        features = self.vision_model(pixel_values, view_mask)
        batch, views, tokens, _ = features.patch_tokens.shape
        patches = self.visual_adapter(features.patch_tokens.flatten(1, 2))  # (batch, views*tokens, hidden)
        patch_mask = view_mask.bool().repeat_interleave(tokens, dim=1)
        probs = self._disease_probs(features.study_embeds) if clue_probs is None else clue_probs.to(patches.dtype)
        out = {"disease_probs": probs, "clue_tokens": None, "clue_mask": None, "clue_logits": None}

        if self.config.clue_config.use_clue_injection or self.clue_interaction is not None:
            clue_mask = self._select_clues(probs)
            clues = self.clue_injector(probs, self.prompt_bank.to(patches.dtype), clue_mask)
            num_disease_clues = clues.shape[1]
            all_clues, all_mask = clues, torch.ones_like(clue_mask)
            if clue_embeds is not None:
                extra_mask = (
                    torch.ones(clue_embeds.shape[:2], dtype=torch.bool, device=clue_embeds.device)
                    if clue_embeds_mask is None
                    else clue_embeds_mask.bool()
                )
                all_clues = torch.cat([clues, self.clue_injector.embed_extra(clue_embeds.to(clues.dtype))], dim=1)
                all_mask = torch.cat([all_mask, extra_mask], dim=1)
            if self.clue_interaction is not None:
                globals_ = self.global_adapter(torch.cat([features.study_embeds[:, None], features.view_embeds], dim=1))
                global_mask = torch.cat([view_mask.new_ones(batch, 1), view_mask], dim=1).bool()
                all_clues, patches = self.clue_interaction(all_clues, all_mask, patches, patch_mask, globals_, global_mask)
            clues = all_clues[:, :num_disease_clues]
            out["clue_mask"] = clue_mask
            out["clue_logits"] = self.consistency_head(clues).squeeze(-1)
            if self.config.clue_config.use_clue_injection:
                out["clue_tokens"] = self.clue_projector(clues)

        visual = self.multi_modal_projector(patches).reshape(batch, views, tokens, -1)
        out["visual_tokens"] = visual[view_mask.bool()].reshape(-1, visual.shape[-1])
        return out

    def _merge_placeholders(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, features: dict) -> torch.Tensor:
        """Scatter visual and clue tokens into their placeholder positions (LLaVA style)."""
        image_positions = input_ids == self.config.image_token_id
        visual = features["visual_tokens"]
        if int(image_positions.sum()) != visual.shape[0]:
            raise ValueError(
                f"the prompts hold {int(image_positions.sum())} <image> tokens but the images give {visual.shape[0]} "
                f"visual tokens ({self._tokens_per_view()} per view): build inputs with TRRGProcessor(images=..., "
                "text=...) so each study's prompt has one <image> block per view"
            )
        inputs_embeds = inputs_embeds.masked_scatter(image_positions.unsqueeze(-1), visual.to(inputs_embeds.dtype))
        clue_positions = input_ids == self.config.clue_token_id
        clue_tokens = features["clue_tokens"]
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

    def _tokens_per_view(self) -> str:
        grid = self.config.image_token_grid
        return str(grid * grid) if grid else "backbone-dependent"

    def _consistency_loss(self, features: dict, disease_labels, disease_label_mask) -> torch.Tensor | None:
        if disease_labels is None or features["clue_logits"] is None:
            return None
        if self.config.clue_config.consistency_loss_weight <= 0:
            return None
        return weighted_disease_bce(features["clue_logits"], disease_labels, self.disease_pos_weight, disease_label_mask)

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
        clue_embeds: torch.Tensor | None = None,
        clue_embeds_mask: torch.Tensor | None = None,
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
            clue_probs: (batch, diseases) to inject instead of the zero-shot perception (e.g. labels
                from another classifier, or ground truth for an upper bound).
            clue_embeds / clue_embeds_mask: (batch, k, projection_dim) / (batch, k), any number of extra
                clues in the stage-1 joint space; they take part in the clue interaction.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        features = None
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(self._embeddable_ids(input_ids))
        if pixel_values is not None:
            if input_ids is None:
                raise ValueError("pixel_values need input_ids with <image> placeholders to place them")
            view_mask = _default_view_mask(pixel_values, view_mask)
            features = self.get_multimodal_features(pixel_values, view_mask, clue_probs, clue_embeds, clue_embeds_mask)
            inputs_embeds = self._merge_placeholders(input_ids, inputs_embeds, features)
        elif input_ids is not None and bool((input_ids == self.config.image_token_id).any()):
            raise ValueError("input_ids hold <image> placeholders but no pixel_values were given")

        lm_output = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        consistency = self._consistency_loss(features, disease_labels, disease_label_mask) if features else None
        loss = lm_output.loss
        if consistency is not None and loss is not None:
            loss = loss + self.config.clue_config.consistency_loss_weight * consistency
        return TRRGCausalLMOutputWithPast(
            loss=loss,
            lm_loss=lm_output.loss,
            consistency_loss=consistency,
            logits=lm_output.logits,
            cache=lm_output.get("cache"),
            hidden_states=lm_output.get("hidden_states"),
            attentions=lm_output.get("attentions"),
            disease_probs=features["disease_probs"] if features else None,
            clue_logits=features["clue_logits"] if features else None,
            clue_mask=features["clue_mask"] if features else None,
        )

    def _embeddable_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Placeholders are overwritten after the lookup; map them to a valid id for the lookup."""
        placeholders = (input_ids == self.config.image_token_id) | (input_ids == self.config.clue_token_id)
        return input_ids.masked_fill(placeholders, 0)

    _PREFILL_ONLY_INPUTS = ("pixel_values", "view_mask", "clue_probs", "clue_embeds", "clue_embeds_mask",
                            "disease_labels", "disease_label_mask")

    def prepare_inputs_for_generation(self, input_ids, is_first_iteration: bool | None = False, **kwargs):
        """Images and clues enter only at prefill: after that the cache holds them (beam search,
        sampling and streaming then work with stock ``generate()``)."""
        model_inputs = super().prepare_inputs_for_generation(input_ids, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            for name in self._PREFILL_ONLY_INPUTS:
                model_inputs.pop(name, None)
        return model_inputs


__all__ = [
    "TRRGContrastiveModel",
    "TRRGForConditionalGeneration",
    "TRRGPreTrainedModel",
    "TRRGContrastiveOutput",
    "TRRGCausalLMOutputWithPast",
    "multi_positive_contrastive_loss",
    "disease_logits_from_prompt_bank",
    "weighted_disease_bce",
    "positive_class_weight",
    "same_text_mask",
    "soft_clue_embeddings",
    "masked_mean",
]

# Hub bundle: saving a model copies these files and writes auto_map, so users load it with
# AutoModel.from_pretrained(folder_or_hub_id, trust_remote_code=True).
TRRGContrastiveModel.register_for_auto_class("AutoModel")
TRRGForConditionalGeneration.register_for_auto_class("AutoModel")
