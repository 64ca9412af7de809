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
from trrg.trainers.arguments import TRRGDataArguments, TRRGPretrainArguments, stage_options
from trrg.trainers.collators import PretrainCollator, StudyCollatorMixin, label_prevalence, study_columns_kept
from trrg.trainers.distributed import gather_for_global_loss, world_size
from trrg.trainers.loss_parts import LossPartsMixin
from trrg.trainers.training_distribution import record_training_distribution
from trrg.trainers.training_data import evaluation_split, load_training_studies


class ClampLogitScaleCallback(TrainerCallback):
    """After every optimizer step the temperature is clamped (the open_clip recipe)."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        _unwrap(model).clamp_logit_scale()


def _unwrap(model):
    return getattr(model, "module", model)


class TRRGPretrainer(LossPartsMixin, StudyCollatorMixin, Trainer):
    """``Trainer`` for ``TRRGContrastiveModel`` (stage 1); logs ``sentence_loss`` and ``prompt_loss`` apart.

    Called the Hugging Face way (``model=, args=, train_dataset=, processing_class=``), it does what
    ``TRRGPretrainArguments`` documents, as ``trrg pretrain`` does: the study collator and the positive
    weights of the prompt loss from the training labels. Under several processes the sentence loss is
    computed over the embeddings of all ranks (the local part keeps its gradient) so it equals the
    single-process loss of the global batch.
    """

    loss_parts = ("sentence_loss", "prompt_loss", "first_view_prompt_loss")

    def __init__(self, model=None, args=None, data_collator=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, *more, data_args: TRRGDataArguments | None = None, **kwargs):
        kwargs["callbacks"] = list(kwargs.pop("callbacks", None) or []) + [ClampLogitScaleCallback()]
        study_columns_kept(args)
        self.options = stage_options(args, TRRGPretrainArguments)
        self.data_args = data_args or TRRGDataArguments()
        if args is not None and args.label_names is None:  # disease_label_mask is optional: not a label
            args.label_names = ["disease_labels"]
        if data_collator is None and processing_class is not None and model is not None and not more:
            data_collator = PretrainCollator.from_arguments(processing_class, model.config, self.options, self.data_args)
        if model is not None and train_dataset is not None:
            prevalence = label_prevalence(train_dataset["labels"], self.data_args.uncertain)
            with torch.no_grad():
                model.disease_pos_weight.copy_(positive_class_weight(prevalence, self.options.prompt_pos_weight_power))
        super().__init__(model, args, data_collator, train_dataset, eval_dataset, processing_class, *more, **kwargs)

    def train(self, *args, **kwargs):
        result = super().train(*args, **kwargs)
        record_training_distribution(self)
        return result

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if world_size() > 1:  # the sentence loss over the global batch (model.forward's ``gather``)
            inputs = {**inputs, "gather": gather_for_global_loss}
        outputs = model(**inputs)
        self.record_loss_parts(outputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss


def build_pretrainer(args: TRRGPretrainArguments, data_args: TRRGDataArguments, model=None, processor=None):
    """Model and data from the argument dataclasses, and the ``TRRGPretrainer`` over them (also used by
    ``trrg demo``); everything the arguments document happens inside the trainer."""
    if model is None:
        model, processor = load_pretrain_model(args)
    studies = load_training_studies(data_args)
    eval_dataset = evaluation_split(studies, data_args, args.eval_strategy)
    trainer = TRRGPretrainer(model=model, args=args, train_dataset=studies[data_args.train_split],
                             eval_dataset=eval_dataset, processing_class=processor, data_args=data_args)
    return trainer, processor


def load_pretrain_model(args: TRRGPretrainArguments):
    """A stage-1 folder (validated to be one) or a fresh model from a preset."""
    if args.model in PRESETS:
        return build_pretrain_model(args.model, args.vision, args.text, seed=args.seed)
    return load_model_folder(args.model, expected="trrg_contrastive")
