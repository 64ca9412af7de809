"""Stage 1 (pretrain): ``TRRGPretrainer``, the ``Trainer`` of ``TRRGContrastiveModel``.

Losses: sentence-level multi-positive InfoNCE (one sampled sentence per study; identical sentences
are positives) + disease-prompt BCE (positive vs negated prompt). Against the flood of negated
sentences: sentences stating a finding are oversampled (``positive_sentence_rate``) and positive
labels of the prompt loss are weighted ((1 - prevalence) / prevalence) ** power.
"""

from __future__ import annotations

import torch
from transformers import Trainer, TrainerCallback

from trrg.assembly.build import build_pretrain_model
from trrg.assembly.hub_folders import load_model_folder
from trrg.assembly.presets import PRESETS
from trrg.modeling.modeling_trrg import positive_class_weight
from trrg.trainers.arguments import TRRGDataArguments, TRRGPretrainArguments
from trrg.trainers.collators import PretrainCollator, StudyCollatorMixin, label_prevalence, study_columns_kept
from trrg.trainers.distributed import gather_for_global_loss, world_size
from trrg.trainers.loss_parts import LossPartsMixin
from trrg.trainers.training_data import evaluation_split, load_training_studies


class ClampLogitScaleCallback(TrainerCallback):
    """After every optimizer step the temperature is clamped (the open_clip recipe)."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        _unwrap(model).clamp_logit_scale()


def _unwrap(model):
    return getattr(model, "module", model)


class TRRGPretrainer(LossPartsMixin, StudyCollatorMixin, Trainer):
    """``Trainer`` for ``TRRGContrastiveModel`` (stage 1); logs ``sentence_loss`` and ``prompt_loss`` apart.

    Under several processes the sentence loss is computed over the embeddings of all ranks (the
    local part keeps its gradient) so it equals the single-process loss of the global batch.
    """

    loss_parts = ("sentence_loss", "prompt_loss")

    def __init__(self, *args, **kwargs):
        callbacks = list(kwargs.pop("callbacks", None) or []) + [ClampLogitScaleCallback()]
        study_columns_kept(kwargs.get("args"))
        model = kwargs.get("model", args[0] if args else None)
        if kwargs.get("data_collator") is None and len(args) < 3 and kwargs.get("processing_class") is not None:
            # The standard call, Trainer(model=, args=, train_dataset=, processing_class=), gets the study collator.
            config, options = model.config, kwargs.get("args")
            kwargs["data_collator"] = PretrainCollator(
                kwargs["processing_class"], config.disease_prompts, config.disease_names,
                getattr(options, "positive_sentence_rate", 0.7), seed=getattr(options, "seed", 42),
                augment=getattr(options, "augment", False), single_view_rate=getattr(options, "single_view_rate", 0.0))
        super().__init__(*args, callbacks=callbacks, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if world_size() > 1:  # the sentence loss over the global batch (model.forward's ``gather``)
            inputs = {**inputs, "gather": gather_for_global_loss}
        outputs = model(**inputs)
        self.record_loss_parts(outputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss


def build_pretrainer(args: TRRGPretrainArguments, data_args: TRRGDataArguments, model=None, processor=None):
    """Model, data and ``TRRGPretrainer`` from the argument dataclasses (also used by ``trrg demo``)."""
    if model is None:
        model, processor = load_pretrain_model(args)
    studies = load_training_studies(data_args)
    train = studies[data_args.train_split]
    prevalence = label_prevalence(train["labels"], data_args.uncertain)
    with torch.no_grad():
        model.disease_pos_weight.copy_(positive_class_weight(prevalence, args.prompt_pos_weight_power))
    collator = PretrainCollator(processor, model.config.disease_prompts, model.config.disease_names,
                                args.positive_sentence_rate, data_args.uncertain, seed=args.seed,
                                augment=args.augment, strict_images=data_args.strict_images,
                                single_view_rate=args.single_view_rate)
    eval_dataset = evaluation_split(studies, data_args, args.eval_strategy)
    if args.label_names is None:  # disease_label_mask is optional: do not require it for eval loss
        args.label_names = ["disease_labels"]
    trainer = TRRGPretrainer(model=model, args=args, train_dataset=train, eval_dataset=eval_dataset,
                             data_collator=collator, processing_class=processor)
    return trainer, processor


def load_pretrain_model(args: TRRGPretrainArguments):
    """A stage-1 folder (validated to be one) or a fresh model from a preset."""
    if args.model in PRESETS:
        return build_pretrain_model(args.model, args.vision, args.text, seed=args.seed)
    return load_model_folder(args.model, expected="trrg_contrastive")
