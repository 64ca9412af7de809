"""Stage-1 perception on the CXR phantom: zero-shot AUROC per observation and the pointing game of
the evidence maps, for TRRG's stage 1 (global + local alignment) against global alignment only.

    python benchmarks/perception.py --out docs/perception                       # 2 arms x 3 seeds
    python benchmarks/perception.py --out docs/perception --summary-only        # tables from OUT/runs
    python benchmarks/perception.py --out /tmp/p --seeds 0 --num-train 200 --num-test 100 --pretrain-epochs 2

Arms (the switch lives here, not in the public config):
  local   the model as shipped: sentence and prompt logits are the mean of the global (study
          embedding) and the local (log-sum-exp pooled patch) similarities
  global  the same model with the local half switched off (study embedding only), as before
Probes (PROBES below; `--arms local fine8 ...`): fine8 / fine8wide (a 3-stage encoder, 8x8 map),
posweight1 (the prompt loss's rare positives weighted by the full odds), augment (stage 1's light
augmentation on), augment_shift (whole-pixel shifts only), oversample (studies with rare findings drawn
more often, as stage 2 does), decay01 (weight decay 0.1), multiscale8 / multiscale16 (an earlier stage's
8x8 or 16x16 patches join the local alignment), ema (a moving average of the weights is measured), sharp20 / sharp50 (a sharper pooling of the patch evidence), batch32 / batch16 (half
or a quarter of the batch, more steps), lr1e-3 (half the peak rate). Run one probe with an augmentation per process.

Per arm and seed: `trrg pretrain`'s tiny recipe (`commands.demo.run_pretrain` settings) on the train
split, then on the test split: AUROC and F1@0.5 per observation, and the pointing game per finding
with a drawn region (`phantom_meta.json`): is the peak cell of the finding's evidence map on a
drawn region, against the rate a random cell would reach. Also the training seconds per study.
Writes OUT/runs/<arm>_seed<k>.json as each run ends (a rerun skips finished runs), then
OUT/perception.json and OUT/perception.md; --summary-only rebuilds those two from OUT/runs alone.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import types
from pathlib import Path

import numpy as np

ARMS = ("global", "local")
# Probes of stage 1 against "local" (the model as shipped), each a change of the preset or the recipe;
# the switches live here, not in the public config.
PROBES = {
    # A 3-stage ResNet (16-32-64): its feature map is 8x8 at 128 px (the tiny preset's 4-stage map is
    # 4x4, a cell per 32 px), and the local alignment reads all 64 cells.
    "fine8": {"preset": {"vision": {"hidden_sizes": [16, 32, 64], "depths": [1, 1, 1]}, "image_token_grid": 8}},
    # The same 8x8 map from a wider 3-stage ResNet (32-64-128).
    "fine8wide": {"preset": {"vision": {"hidden_sizes": [32, 64, 128], "depths": [1, 1, 1]}, "image_token_grid": 8}},
    # Rare positives of the disease-prompt loss weighted by the full odds (0.5: their square root).
    "posweight1": {"train": {"prompt_pos_weight_power": 1.0}},
    # The light augmentation (small affine, brightness/contrast): at 30 epochs on 1,000 studies stage 1
    # fits its training set (prompt loss ~0.05); measured at 10 epochs it lowered every figure.
    "augment": {"train": {"augment": True}},
    # Only whole-pixel shifts (up to 3 % each way): no rotation or scaling, so no resampling blur of
    # thin or small findings, and no brightness/contrast jitter.
    "augment_shift": {"train": {"augment": True}, "augmentation": "whole_pixel_shift"},
    # CLIP's order of weight decay (0.1; the recipe has 0.01): stage 1 fits its 1,000 studies.
    "decay01": {"train": {"weight_decay": 0.1}},
    # Studies with rare findings drawn more often (stage 2's sampler, trainers.collators.rare_finding_weights).
    "oversample": {"oversample_rare_findings": True},
    # Multi-scale local alignment: the patches of an earlier backbone stage (hidden state 3: 8x8 cells of
    # 16 px, 64 channels; hidden state 2: 16x16 of 8 px) join the last map's 4x4 in the local logits, each
    # scale with its own projection into the joint space; the evidence maps stay the 4x4 ones.
    "multiscale8": {"fine_patch_layer": 3},
    "multiscale16": {"fine_patch_layer": 2},
    # An exponential moving average of the weights (and batch-norm statistics) over the training steps, the
    # average measured: stage 1 fits its 1,000 studies, an average of the later iterates generalises
    # better in such regimes (Polyak averaging; Izmailov et al. 2018). 0.99 per step: a half-life of ~4
    # epochs at 1,000 studies (16 steps an epoch).
    "ema": {"weight_average_decay": 0.99},
    # A sharper pooling of the patch evidence (the config's local_pool_sharpness, 5 as shipped): at 5 the
    # log-sum-exp of ~0.1-1 cosine contrasts over 32 patches sits near their mean, so a finding seen in
    # one patch is diluted; at 20-50 it follows the strongest patch.
    "sharp20": {"config": {"local_pool_sharpness": 20.0}},
    "sharp50": {"config": {"local_pool_sharpness": 50.0}},
    # Twice the optimizer steps at half the batch (the writer learns rare findings from the number of
    # steps: RECIPES' note on stage 2); fewer in-batch negatives for the sentence contrast.
    "batch32": {"train": {"per_device_train_batch_size": 32}},
    # A quarter of the batch, four times the steps.
    "batch16": {"train": {"per_device_train_batch_size": 16}},
    # Half the recipe's peak rate.
    "lr1e-3": {"train": {"learning_rate": 1e-3}},
    # At the recipe's batch 32 (the batch named, so the arm keeps its meaning if the recipe changes):
    # the light augmentation, a trade at batch 64, with twice the steps to learn from varied studies;
    "augment_b32": {"train": {"augment": True, "per_device_train_batch_size": 32}},
    # the disease-prompt loss (the zero-shot clues' own objective) weighted twice the sentence contrast.
    "prompt2_b32": {"config": {"prompt_loss_weight": 2.0}, "train": {"per_device_train_batch_size": 32}},
    # Diagnosis of augment_b32: the sentence contrast off (weight 0), the prompt loss alone with the
    # augmentation; does the sentence loss keep stage 1 from drawing on the augmentation?
    # A learnt bias per disease added to the zero-shot logits (each finding's base rate), so the image
    # embedding need not spend its direction on how rare a finding is: in the supervised classifier's
    # cosine form (benchmarks/decidability.py --head cosine_bias) it raised the 1,000-study AUROC.
    "bias_augment_b32": {"disease_bias": True, "train": {"augment": True, "per_device_train_batch_size": 32}},
    "bias_b32": {"disease_bias": True, "train": {"per_device_train_batch_size": 32}},
    # The disease-prompt logits with a temperature of their own, learnt by the prompt loss alone (clamped at
    # the config's logit_scale_max like the shared one): the shared one is set by the sentence contrast
    # (~22 in the demo's model), which caps how confident a zero-shot logit can get.
    "promptscale_augment_b32": {"prompt_scale": True, "train": {"augment": True, "per_device_train_batch_size": 32}},
    # Every visit with both views (single_view_rate 0; the recipe shows half the visits of a two-view study
    # with the frontal view alone): the supervised ceiling (benchmarks/decidability.py) always sees both.
    # Plain BCE for the disease prompts (power 0; the recipe weights rare positives by the square root of
    # their odds, posweight1 by the full odds): the supervised ceiling is trained without a weight.
    "posweight0_b32": {"train": {"prompt_pos_weight_power": 0.0, "per_device_train_batch_size": 32}},
    "posweight0_augment_b32": {"train": {"prompt_pos_weight_power": 0.0, "augment": True,
                                         "per_device_train_batch_size": 32}},
    # (Without the frontal-alone reading stage 1 has since round 3's seventh session: the arms keep their meaning.)
    "twoview_b32": {"config": {"first_view_prompt_loss_weight": 0.0},
                    "train": {"single_view_rate": 0.0, "per_device_train_batch_size": 32}},
    "twoview_augment_b32": {"config": {"first_view_prompt_loss_weight": 0.0},
                            "train": {"single_view_rate": 0.0, "augment": True, "per_device_train_batch_size": 32}},
    # Between the two: a quarter of the visits with the frontal view alone.
    "views25_augment_b32": {"train": {"single_view_rate": 0.25, "augment": True, "per_device_train_batch_size": 32}},
    # The full demo's stage 1 (DemoPlan "full": the augmentation at batch 64), for 3,000-study runs.
    "augment_b64": {"train": {"augment": True, "per_device_train_batch_size": 64}},
    "promptonly_augment_b32": {"config": {"sentence_loss_weight": 0.0},
                               "train": {"augment": True, "per_device_train_batch_size": 32}},
    # The same without the augmentation, against batch32 with the same draws: what the sentence contrast
    # costs the zero-shot ranking.
    "promptonly_b32": {"config": {"sentence_loss_weight": 0.0}, "train": {"per_device_train_batch_size": 32}},
    # Diagnosis, not a candidate (it leaves the paper's design): the disease prompts as free vectors
    # learnt by the prompt loss (initialised at the text encoder's prompts), the sentence contrast as
    # shipped. Does the text encoder's prompt bank cost stage 1 the gap to the supervised cosine form?
    "freeprompt_b32": {"free_prompts": True, "train": {"per_device_train_batch_size": 32}},
    # The text encoder's prompts kept, their differences (positive - negated) pushed apart: a penalty on
    # the squared cosines between the diseases' difference directions. The negation the prompts share
    # ("there is no ...") makes these directions alike (lesion and fracture at 0.74 in the demo's model),
    # so an image cannot raise one finding's logit without raising the other's.
    "decorrelate_b32": {"prompt_decorrelation": 1.0, "train": {"per_device_train_batch_size": 32}},
    "decorrelate_augment_b32": {"prompt_decorrelation": 1.0,
                                "train": {"augment": True, "per_device_train_batch_size": 32}},
    # The recipe before round 3's seventh session: half the visits of a two-view study hide the lateral view
    # (single_view_rate 0.5), no reading from the frontal view alone (first_view_prompt_loss_weight 0).
    "viewdrop_b32": {"config": {"first_view_prompt_loss_weight": 0.0},
                     "train": {"single_view_rate": 0.5, "per_device_train_batch_size": 32}},
    "viewdrop_augment_b32": {"config": {"first_view_prompt_loss_weight": 0.0},
                             "train": {"single_view_rate": 0.5, "augment": True, "per_device_train_batch_size": 32}},
    # Every visit with both views (as twoview_augment_b32, the best two-view reading) and the disease-prompt
    # loss also on each two-view study read from its frontal view alone (from the same forward pass's
    # features): does the model keep its one-view reading without the single-view visits' cost?
    # It became the recipe (the config's first_view_prompt_loss_weight, stage 1's single_view_rate 0): the
    # probe's own loss is kept, the config's switched off, so the arm keeps its meaning.
    "frontalaux_twoview_augment_b32": {"frontal_reading": True, "config": {"first_view_prompt_loss_weight": 0.0},
                                       "train": {"single_view_rate": 0.0, "augment": True,
                                                 "per_device_train_batch_size": 32}},
}


def whole_pixel_shift(image, rng):
    """The image moved by whole pixels (up to 3 % of each side), the uncovered border black."""
    from PIL import Image

    dx, dy = (int(round(v)) for v in rng.uniform(-0.03, 0.03, size=2) * (image.width, image.height))
    shifted = Image.new(image.mode, image.size, 0)
    shifted.paste(image, (dx, dy))
    return shifted


def _add_fine_patches(model, layer: int) -> None:
    """The local alignment reads the patches of backbone hidden state ``layer`` too (``multiscale`` probes):
    a projection of their own into the joint space, appended to the last map's patches."""
    import torch
    import torch.nn.functional as F

    from trrg.modeling.modeling_trrg import TRRGJointEmbeddings, patch_embeddings

    perception, vision = model.perception, model.perception.vision_model
    width = model.config.vision_config.hidden_sizes[layer - 1]
    perception.fine_projection = torch.nn.Linear(width, model.config.projection_dim, bias=False)
    encode, embed, maps = vision.forward, perception.embed, perception.evidence_maps

    def forward(pixel_values, view_mask, statistics_layers=None, keep_layer=None):
        features = encode(pixel_values, view_mask, statistics_layers, layer if keep_layer is None else keep_layer)
        features.fine_layer = keep_layer is None  # the kept layer is the fine patches (not an attribution's)
        return features

    def fine_embed(features, view_mask):
        joint = embed(features, view_mask)
        if not getattr(features, "fine_layer", False):
            return joint
        batch, views = view_mask.shape
        tokens = features.kept_layer.flatten(2).transpose(1, 2)  # (real views, cells, width)
        padded = tokens.new_zeros(batch * views, *tokens.shape[1:])
        padded[view_mask.reshape(-1).bool()] = tokens
        fine, fine_mask = patch_embeddings(padded.reshape(batch, views, *tokens.shape[1:]).float(), view_mask,
                                           lambda t: F.linear(t, perception.fine_projection.weight.float()))
        joint = TRRGJointEmbeddings(study_embeds=joint.study_embeds,
                                    patch_embeds=torch.cat([joint.patch_embeds, fine], dim=1),
                                    patch_mask=torch.cat([joint.patch_mask, fine_mask], dim=1))
        joint.coarse_patches = joint.patch_embeds.shape[1] - fine.shape[1]
        return joint

    def coarse_maps(embeddings, prompt_bank, views):
        count = getattr(embeddings, "coarse_patches", embeddings.patch_embeds.shape[1])
        return maps(TRRGJointEmbeddings(study_embeds=embeddings.study_embeds, patch_embeds=embeddings.patch_embeds[:, :count],
                                        patch_mask=embeddings.patch_mask[:, :count]), prompt_bank, views)

    vision.forward, perception.embed, perception.evidence_maps = forward, fine_embed, coarse_maps


def _global_only(model) -> None:
    """Switch off the local half of the stage-1 logits (the reference arm): the disease logits (on the
    model's ``TRRGPerception``) and the sentence logits read the study embedding only."""
    from trrg.modeling.modeling_trrg import disease_logits_from_prompt_bank

    def disease_logits(self, embeddings, prompt_bank):
        return disease_logits_from_prompt_bank(embeddings.study_embeds, prompt_bank.float(), self.logit_scale.float().exp())

    def sentence_logits(self, image_embeds, patch_embeds, patch_mask, text_embeds):
        return self.perception.logit_scale.float().exp() * image_embeds @ text_embeds.float().t()

    model.perception.disease_logits = types.MethodType(disease_logits, model.perception)
    model.sentence_logits = types.MethodType(sentence_logits, model)


def _add_disease_bias(model) -> None:
    """A learnt per-disease bias (zeros at first; no weight decay: its name says bias) added to the
    perception's zero-shot logits (``disease_bias`` probes)."""
    import torch

    perception = model.perception
    perception.disease_bias = torch.nn.Parameter(torch.zeros(model.config.num_diseases))
    logits = perception.disease_logits
    perception.disease_logits = lambda embeddings, prompt_bank: logits(embeddings, prompt_bank) + perception.disease_bias.float()


def _add_prompt_scale(model) -> None:
    """The zero-shot disease logits with a learnt temperature of their own (``prompt_scale`` probes):
    ``prompt_logit_scale``, initialised and clamped as the shared one, which the sentence logits keep."""
    import torch

    from trrg.modeling.modeling_trrg import disease_logits_from_prompt_bank, local_disease_logits

    perception = model.perception
    perception.prompt_logit_scale = torch.nn.Parameter(perception.logit_scale.detach().clone())

    def disease_logits(embeddings, prompt_bank):
        scale, prompt_bank = perception.prompt_logit_scale.float().exp(), prompt_bank.float()
        global_logits = disease_logits_from_prompt_bank(embeddings.study_embeds, prompt_bank, scale)
        local_logits = local_disease_logits(embeddings.patch_embeds, embeddings.patch_mask, prompt_bank, scale,
                                            model.config.local_pool_sharpness)
        return (global_logits + local_logits) / 2

    clamp = perception.clamp_logit_scale

    def clamp_both(maximum):
        clamp(maximum)
        with torch.no_grad():
            perception.prompt_logit_scale.clamp_(0, math.log(maximum))

    perception.disease_logits, perception.clamp_logit_scale = disease_logits, clamp_both


def _free_prompts(model, processor) -> None:
    """The prompt bank as a free parameter (``free_prompts`` probes), started at the text encoder's."""
    import torch
    import torch.nn.functional as F

    from trrg.assembly.bridge import encode_prompt_bank

    with torch.no_grad():
        model.free_prompt_bank = torch.nn.Parameter(encode_prompt_bank(model, processor).detach().clone())
    model.encode_prompt_bank = lambda *args, **kwargs: F.normalize(model.free_prompt_bank, dim=-1)


def prompt_difference_overlap(prompt_bank):
    """Mean squared cosine between different diseases' directions positive - negated prompt."""
    import torch
    import torch.nn.functional as F

    directions = F.normalize(prompt_bank[:, 0] - prompt_bank[:, 1], dim=-1)
    cosines = directions @ directions.t()
    off_diagonal = ~torch.eye(len(cosines), dtype=torch.bool, device=cosines.device)
    return cosines[off_diagonal].pow(2).mean()


def _add_prompt_decorrelation(model, weight: float) -> None:
    """Stage 1's loss plus ``weight`` * ``prompt_difference_overlap`` of the batch's prompt bank."""
    forward = model.forward

    def decorrelated(*args, **kwargs):
        output = forward(*args, **kwargs)
        if output.loss is not None and kwargs.get("prompt_input_ids") is not None:
            bank = model.encode_prompt_bank(kwargs["prompt_input_ids"], kwargs.get("prompt_attention_mask"))
            output.loss = output.loss + weight * prompt_difference_overlap(bank.float())
        return output

    model.forward = decorrelated


def _add_frontal_reading(model) -> None:
    """Stage 1's loss plus the disease-prompt loss of each two-view study read from its first (frontal)
    view alone: the vision features of the forward pass kept, the frontal view's taken as the study's
    (``frontal_reading`` probes)."""
    from trrg.modeling.modeling_trrg import VisionFeatures, weighted_disease_bce

    perception, kept = model.perception, {}
    vision_forward, model_forward = perception.vision_model.forward, model.forward

    def keep_features(*args, **kwargs):
        kept["features"] = vision_forward(*args, **kwargs)
        return kept["features"]

    def with_frontal_reading(*args, **kwargs):
        output = model_forward(*args, **kwargs)
        labels, view_mask = kwargs.get("disease_labels"), kwargs.get("view_mask")
        if output.loss is None or labels is None or view_mask is None or view_mask.shape[1] < 2:
            return output
        two_views = view_mask[:, 1] > 0
        if not two_views.any():
            return output
        features = kept.pop("features")
        frontal = VisionFeatures(patch_tokens=features.patch_tokens[two_views, :1],
                                 view_embeds=features.view_embeds[two_views, :1],
                                 study_embeds=features.view_embeds[two_views, 0])
        embeddings = perception.embed(frontal, view_mask[two_views, :1])
        bank = model.encode_prompt_bank(kwargs["prompt_input_ids"], kwargs.get("prompt_attention_mask"))
        mask = kwargs.get("disease_label_mask")
        frontal_loss = weighted_disease_bce(perception.disease_logits(embeddings, bank), labels[two_views],
                                            perception.disease_pos_weight, None if mask is None else mask[two_views])
        output.loss = output.loss + model.config.prompt_loss_weight * frontal_loss
        return output

    perception.vision_model.forward, model.forward = keep_features, with_frontal_reading


def train(arm: str, seed: int, data_dir: Path, work: Path, plan, image_size: int = 128) -> tuple:
    import dataclasses

    from trrg.assembly.build import build_pretrain_model
    from trrg.assembly.presets import PRESETS
    from trrg.commands.demo import training_args
    from trrg.trainers.arguments import TRRGDataArguments, TRRGPretrainArguments
    from trrg.trainers.pretrain_trainer import build_pretrainer

    preset, probe = "tiny", PROBES.get(arm, {})
    changes = {**probe.get("preset", {})}
    if "vision" in changes:
        changes["vision"] = {**PRESETS["tiny"].vision, **changes["vision"]}
    if image_size != PRESETS["tiny"].image_size:  # the input-size trade-off: the tiny model at another size
        changes["image_size"] = image_size
    if changes:
        preset = f"tiny@{arm}@{image_size}"
        PRESETS[preset] = dataclasses.replace(PRESETS["tiny"], **changes)
    if probe.get("augmentation"):  # this process trains one arm: the processor's augmentation replaced
        from trrg.modeling import image_processing_trrg

        image_processing_trrg.augment_xray = globals()[probe["augmentation"]]
    model, processor = build_pretrain_model(preset, seed=seed)
    for name, value in probe.get("config", {}).items():  # read when used: set before training
        setattr(model.config, name, value)
    if arm == "global":
        _global_only(model)
    if probe.get("fine_patch_layer"):
        _add_fine_patches(model, probe["fine_patch_layer"])
    if probe.get("disease_bias"):
        _add_disease_bias(model)
    if probe.get("prompt_scale"):
        _add_prompt_scale(model)
    if probe.get("free_prompts"):
        _free_prompts(model, processor)
    if probe.get("frontal_reading"):
        _add_frontal_reading(model)
    if probe.get("prompt_decorrelation"):
        _add_prompt_decorrelation(model, probe["prompt_decorrelation"])
    args = training_args(TRRGPretrainArguments, work / f"{arm}_seed{seed}", plan, "pretrain", seed, disable_tqdm=True,
                         **probe.get("train", {}))
    trainer, processor = build_pretrainer(args, TRRGDataArguments(data=str(data_dir), eval_split=""), model, processor)
    if probe.get("oversample_rare_findings"):
        _oversample_rare_findings(trainer, seed)
    average = _WeightAverage(model, probe["weight_average_decay"]) if probe.get("weight_average_decay") else None
    if average is not None:
        trainer.add_callback(average)
    started = time.perf_counter()
    trainer.train()
    if average is not None:
        average.apply()
    return trainer.model.eval(), processor, time.perf_counter() - started


class _WeightAverage:
    """A ``TrainerCallback`` keeping an exponential moving average of the model's floating-point parameters
    and buffers after every optimizer step; ``apply`` copies it into the model (the ``ema`` probe)."""

    def __init__(self, model, decay: float):
        self.model, self.decay = model, decay
        self.average = {name: value.detach().clone() for name, value in self._state().items()}

    def _state(self) -> dict:
        # The training-image statistics are fitted after training, not trained: left out.
        return {name: value for name, value in self.model.state_dict(keep_vars=True).items()
                if value.dtype.is_floating_point and "training_distribution" not in name}

    def on_step_end(self, args, state, control, **kwargs):
        import torch

        with torch.no_grad():
            for name, value in self._state().items():
                self.average[name].lerp_(value.detach(), 1 - self.decay)

    def apply(self) -> None:
        import torch

        with torch.no_grad():
            for name, value in self._state().items():
                value.copy_(self.average[name])

    def __getattr__(self, name):  # the other TrainerCallback events do nothing
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def _oversample_rare_findings(trainer, seed: int) -> None:
    """The trainer draws its studies with replacement, rare findings more often, as stage 2 does."""
    import torch

    from trrg.trainers.collators import rare_finding_weights

    weights = rare_finding_weights(trainer.train_dataset["labels"])
    trainer._get_train_sampler = types.MethodType(
        lambda self, train_dataset=None: torch.utils.data.WeightedRandomSampler(
            weights, len(weights), generator=torch.Generator().manual_seed(seed)), trainer)


def measure(model, processor, data_dir: Path) -> dict:
    """AUROC/F1 per observation and the pointing game on ``data_dir``'s test split."""
    import torch

    from trrg.assembly.bridge import encode_prompt_bank
    from trrg.evaluation.perception import perception_scores, pointing_cases, pointing_game
    from trrg.processing.phantom import finding_regions
    from trrg.processing.studies import load_studies
    from trrg.processing.studies.schema import CachedStudyReader
    from trrg.trainers.collators import disease_targets

    rows = list(load_studies(data_dir, splits=["test"])["test"])
    meta = json.loads((data_dir / "phantom_meta.json").read_text())
    names = list(model.config.disease_names)
    prompt_bank = encode_prompt_bank(model, processor)
    reader = CachedStudyReader(max_cached_studies=0)
    probs, frontal_probs, targets, cases = [], [], [], []
    for start in range(0, len(rows), 64):
        kept, views = reader.read_batch(rows[start : start + 64])
        pixels = processor.image_processor(views, return_tensors="pt")
        with torch.no_grad():
            perception = model.predict_diseases(pixels["pixel_values"], pixels["view_mask"], prompt_bank,
                                                return_maps=True)
            # The same studies read from the first (frontal) view alone: a one-view study.
            frontal_probs.append(model.predict_diseases(pixels["pixel_values"][:, :1], pixels["view_mask"][:, :1],
                                                        prompt_bank).numpy())
        probs.append(perception.disease_probs.numpy())
        targets.append(disease_targets(kept).numpy())
        cases += pointing_cases(kept, views, perception.evidence_maps.numpy(), names,
                                lambda study: finding_regions(meta, study))
    scores = perception_scores(np.concatenate(probs), np.concatenate(targets), names)
    scores["pointing"] = pointing_game(cases)
    scores["prompt_difference_overlap"] = float(prompt_difference_overlap(prompt_bank.float()))
    directions = torch.nn.functional.normalize(prompt_bank[:, 0] - prompt_bank[:, 1], dim=-1).float()
    scores["lesion_fracture_direction_cosine"] = float(
        directions[names.index("Lung Lesion")] @ directions[names.index("Fracture")])
    frontal = perception_scores(np.concatenate(frontal_probs), np.concatenate(targets), names)
    scores["frontal_only"] = {"auroc_macro": frontal["auroc_macro"], "f1_macro": frontal["f1_macro"],
                              "auroc": {name: v["auroc"] for name, v in frontal["per_observation"].items()}}
    return scores


def run(args) -> None:
    from trrg.commands.demo import DemoPlan
    from trrg.processing.phantom import generate_phantom

    runs = Path(args.out) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    data_dir = args.data or work / f"phantom_{args.num_train}_{args.num_test}_{args.image_size}px_seed{args.data_seed}"
    if args.data is None and not (data_dir / "annotation.json").exists():
        generate_phantom(data_dir, num_train=args.num_train, num_val=10, num_test=args.num_test,
                         image_size=args.image_size, seed=args.data_seed, overwrite=True)
    plan = DemoPlan(num_train=args.num_train, num_val=10, num_test=args.num_test,
                    pretrain_epochs=args.pretrain_epochs, finetune_epochs=0)
    for seed in args.seeds:
        for arm in args.arms:
            label = arm if args.image_size == 128 else f"{arm}@{args.image_size}px"
            path = runs / f"{label}_seed{seed}.json"
            if path.exists():
                continue
            model, processor, seconds = train(arm, seed, data_dir, work, plan, args.image_size)
            result = measure(model, processor, data_dir)
            result.update({"arm": label, "seed": seed, "train_seconds": round(seconds, 1),
                           "train_seconds_per_study_epoch": seconds / (args.num_train * args.pretrain_epochs),
                           "settings": {key: getattr(args, key) for key in
                                        ("num_train", "num_test", "image_size", "pretrain_epochs", "data_seed")},
                           "versions": _versions()})
            path.write_text(json.dumps(result, indent=1) + "\n")
            print(f"{label} seed {seed}: macro AUROC {result['auroc_macro']:.3f}, {seconds:.0f} s", flush=True)


def measure_folder(args) -> None:
    """``--measure``: one saved stage-1 model (e.g. a pretrain stage of benchmarks/ablation.py), measured
    like a run of this benchmark; the settings record the data's own sizes."""
    from trrg.assembly.hub_folders import load_model_folder

    folder, data_dir = args.measure
    model, processor = load_model_folder(folder, expected="trrg_contrastive")
    result = measure(model.eval(), processor, data_dir)
    drawn = json.loads((data_dir / "phantom_meta.json").read_text()).get("arguments", {})
    result.update({"arm": args.arm, "seed": args.seeds[0], "train_seconds": None, "train_seconds_per_study_epoch": None,
                   "settings": {"num_train": drawn.get("num_train"), "num_test": drawn.get("num_test"),
                                "image_size": drawn.get("image_size", args.image_size),
                                "pretrain_epochs": args.pretrain_epochs, "data_seed": drawn.get("seed")},
                   "measured_folder": str(folder), "versions": _versions()})
    runs = Path(args.out) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    (runs / f"{args.arm}_seed{args.seeds[0]}.json").write_text(json.dumps(result, indent=1) + "\n")


def _versions() -> dict:
    import platform

    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}


def _milliseconds(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.2f}"


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(out: Path, command: str) -> dict:
    """OUT/perception.json and OUT/perception.md from OUT/runs (no torch, no training)."""
    results = [json.loads(path.read_text()) for path in sorted((out / "runs").glob("*_seed*.json"))]
    arms = sorted({r["arm"] for r in results}, key=lambda arm: (arm not in ARMS, arm))
    by_arm = {arm: [r for r in results if r["arm"] == arm] for arm in arms}
    names = list(results[0]["per_observation"])
    summary = {"command": command, "settings": results[0]["settings"], "versions": results[0]["versions"],
               "seeds": {arm: sorted(r["seed"] for r in runs) for arm, runs in by_arm.items()}, "arms": {}}
    for arm, runs in by_arm.items():
        pointing_names = sorted({n for r in runs for n in r["pointing"]})
        summary["arms"][arm] = {
            "auroc": {n: _mean([r["per_observation"][n]["auroc"] for r in runs]) for n in names},
            "auroc_macro": _mean([r["auroc_macro"] for r in runs]),
            "pointing": {n: {"hit_rate": _mean([r["pointing"][n]["hit_rate"] for r in runs if n in r["pointing"]]),
                             "chance_rate": _mean([r["pointing"][n]["chance_rate"] for r in runs if n in r["pointing"]]),
                             "cases": int(np.mean([r["pointing"][n]["cases"] for r in runs if n in r["pointing"]]))}
                         for n in pointing_names},
            "train_seconds_per_study_epoch": _mean([r["train_seconds_per_study_epoch"] for r in runs]),
        }
        if all("frontal_only" in r for r in runs):  # runs since the frontal-only reading was added
            summary["arms"][arm]["auroc_macro_per_seed"] = {r["seed"]: r["auroc_macro"] for r in runs}
            summary["arms"][arm]["frontal_only"] = {
                "auroc_macro_per_seed": {r["seed"]: r["frontal_only"]["auroc_macro"] for r in runs},
                "auroc_macro": _mean([r["frontal_only"]["auroc_macro"] for r in runs]),
                "auroc": {n: _mean([r["frontal_only"]["auroc"][n] for r in runs]) for n in names}}
    (out / "perception.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "perception.md").write_text(_markdown(summary, names))
    return summary


def _markdown(summary: dict, names: list[str]) -> str:
    arms = summary["arms"]
    show = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["# Stage-1 perception on the CXR phantom", "",
             f"Regenerate from the runs in this folder: `{summary['command']}`", "",
             f"Settings: {summary['settings']}; seeds per arm: {summary['seeds']}; versions: {summary['versions']}.",
             "AUROC: zero-shot, test split, mean over seeds. Pointing game (local arm): share of positive "
             "findings whose evidence-map peak cell overlaps a drawn region, beside a random cell's rate "
             "(docs/METRICS.md). The global arm's maps come from a patch projection it never trains.", "",
             "| observation | " + " | ".join(f"AUROC {arm}" for arm in arms) + " | pointing hit | pointing chance | cases |",
             "|---|" + "---|" * (len(arms) + 3)]
    local_pointing = arms.get("local", {}).get("pointing", {})
    for name in names:
        point = local_pointing.get(name, {})
        aurocs = " | ".join(show(values["auroc"].get(name)) for values in arms.values())
        lines.append(f"| {name} | {aurocs} | {show(point.get('hit_rate'))} | {show(point.get('chance_rate'))} | "
                     f"{point.get('cases', '')} |")
    lines.append("| **macro** | " + " | ".join(show(values["auroc_macro"]) for values in arms.values()) + " | | | |")
    lines += ["", "| arm | macro AUROC | lowest AUROC | mean pointing hit (chance) | training ms per study and epoch |",
              "|---|---|---|---|---|"]
    for arm, values in arms.items():
        defined = [v for v in values["auroc"].values() if v is not None]
        hits = [p["hit_rate"] for p in values["pointing"].values() if p["hit_rate"] is not None]
        chances = [p["chance_rate"] for p in values["pointing"].values() if p["chance_rate"] is not None]
        pointing = f"{np.mean(hits):.3f} ({np.mean(chances):.3f})" if hits else "n/a"
        lines.append(f"| {arm} | {show(values['auroc_macro'])} | {show(min(defined) if defined else None)} | "
                     f"{pointing} | {_milliseconds(values['train_seconds_per_study_epoch'])} |")
    read_alone = {arm: values for arm, values in arms.items() if "frontal_only" in values}
    if read_alone:  # both views (the test studies as drawn) and the frontal view alone (a one-view study)
        per_seed = lambda values: ", ".join(f"{v:.3f}" for _, v in sorted(values.items()))  # noqa: E731
        lines += ["", "Both views against the frontal view alone (the same test studies read as one-view studies):", "",
                  "| arm | macro AUROC per seed | macro AUROC, frontal alone, per seed | mean | mean, frontal alone | "
                  "Lung Lesion | Fracture | Lung Lesion, frontal alone | Fracture, frontal alone |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for arm, values in read_alone.items():
            frontal = values["frontal_only"]
            lines.append(f"| {arm} | {per_seed(values['auroc_macro_per_seed'])} | {per_seed(frontal['auroc_macro_per_seed'])} | "
                         f"{show(values['auroc_macro'])} | {show(frontal['auroc_macro'])} | "
                         f"{show(values['auroc'].get('Lung Lesion'))} | {show(values['auroc'].get('Fracture'))} | "
                         f"{show(frontal['auroc'].get('Lung Lesion'))} | {show(frontal['auroc'].get('Fracture'))} |")
    probes = [arm for arm in arms if arm in PROBES]
    if probes:  # the pointing game of every arm (the table above shows the local arm's)
        pointed = sorted({name for values in arms.values() for name in values["pointing"]})
        lines += ["", "Pointing hit rate per arm (chance in the first table):", "",
                  "| observation | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
        lines += [f"| {name} | " + " | ".join(show(values["pointing"].get(name, {}).get("hit_rate")) for values in arms.values())
                  + " |" for name in pointed]
    lines += ["", "Training times were taken on 2 CPU cores shared with other work unless the note says otherwise; "
              "compare arms within one table only."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/perception")
    parser.add_argument("--work", default="runs/perception", help="phantom data and checkpoints (not committed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=[*ARMS, *PROBES], default=list(ARMS))
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--summary-only", action="store_true", help="only rebuild the tables from OUT/runs")
    parser.add_argument("--measure", type=Path, nargs=2, metavar=("STAGE1_FOLDER", "DATA"),
                        help="train nothing: measure a saved stage-1 folder on DATA's test split (a phantom with "
                             "its phantom_meta.json) as OUT/runs/<--arm>_seed<--seeds>.json")
    parser.add_argument("--arm", default="local", help="with --measure: the arm the folder is a run of")
    parser.add_argument("--data", type=Path, default=None,
                        help="train and measure on this phantom (with its phantom_meta.json) instead of drawing one; "
                             "--num-train/--num-test must then say its sizes")
    args = parser.parse_args(argv)
    for data in [d for d in (args.data, args.measure and args.measure[1]) if d]:
        if not (data / "phantom_meta.json").is_file():
            parser.error(f"{data}: no phantom_meta.json there; pass a folder written by `trrg phantom`")
    if args.measure:
        measure_folder(args)
    elif not args.summary_only:
        run(args)
    summary = summarize(Path(args.out), f"python benchmarks/perception.py --out {args.out} --summary-only")
    print((Path(args.out) / "perception.md").read_text())
    return 0 if summary["arms"] else 1


if __name__ == "__main__":
    sys.exit(main())
