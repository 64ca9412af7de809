"""Stage 1: ``TRRGPretrainer`` and ``trrg pretrain``.

    trrg pretrain --data runs/phantom/annotation.json --output_dir runs/stage1 --num_train_epochs 15
    accelerate launch --config_file trainers/accelerate_configs/ddp.yaml -m trrg.trainers.pretrain ...

Losses: sentence-level multi-positive InfoNCE (one sampled sentence per study; identical sentences
are positives) + disease-prompt BCE (positive vs negated prompt). Against the flood of negated
sentences: sentences stating a finding are oversampled (``positive_sentence_rate``) and positive
labels of the prompt loss are weighted ((1 - prevalence) / prevalence) ** power.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from trrg.modeling.modeling_trrg import (
    TRRGContrastiveModel,
    multi_positive_contrastive_loss,
    positive_class_weight,
)
from trrg.trainers.arguments import TRRGDataArguments, TRRGPretrainArguments
from trrg.trainers.data import PretrainCollator, label_prevalence
from trrg.trainers.distributed import gather_with_local_grad, scale_gradient, world_size
from trrg.trainers.logging_utils import LossPartsMixin
from trrg.trainers.studies import load_studies


class ClampLogitScaleCallback(TrainerCallback):
    """After every optimizer step the temperature is clamped (the open_clip recipe)."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        _unwrap(model).clamp_logit_scale()


def _unwrap(model):
    return getattr(model, "module", model)


class TRRGPretrainer(LossPartsMixin, Trainer):
    """``Trainer`` for ``TRRGContrastiveModel``; logs ``sentence_loss`` and ``prompt_loss`` apart.

    Under several processes the sentence loss is computed over the embeddings of all ranks (the
    local part keeps its gradient) so it equals the single-process loss of the global batch.
    """

    loss_parts = ("sentence_loss", "prompt_loss")

    def __init__(self, *args, **kwargs):
        callbacks = list(kwargs.pop("callbacks", None) or []) + [ClampLogitScaleCallback()]
        super().__init__(*args, callbacks=callbacks, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if world_size() > 1 and outputs.sentence_loss is not None:
            outputs = self._global_sentence_loss(model, inputs, outputs)
        self.record_loss_parts(outputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def _global_sentence_loss(self, model, inputs, outputs):
        config = _unwrap(model).config
        images = gather_with_local_grad(outputs.image_embeds)
        texts = gather_with_local_grad(outputs.text_embeds)
        groups = gather_with_local_grad(inputs["sentence_group_ids"])
        positives = groups[:, None] == groups[None, :]
        sentence_loss = multi_positive_contrastive_loss(images, texts, _unwrap(model).logit_scale.exp(), positives)
        outputs.sentence_loss = sentence_loss
        loss = scale_gradient(config.sentence_loss_weight * sentence_loss, world_size())
        if outputs.prompt_loss is not None:
            loss = loss + config.prompt_loss_weight * outputs.prompt_loss
        outputs.loss = loss
        return outputs


def build_pretrainer(args: TRRGPretrainArguments, data_args: TRRGDataArguments, model=None, processor=None):
    """Model, data and ``TRRGPretrainer`` from the argument dataclasses (also used by ``trrg demo``)."""
    if model is None:
        model, processor = load_stage1(args)
    studies = load_studies(data_args)
    train = studies[data_args.train_split]
    prevalence = label_prevalence(train["labels"], data_args.uncertain)
    with torch.no_grad():
        model.disease_pos_weight.copy_(positive_class_weight(prevalence, args.prompt_pos_weight_power))
    collator = PretrainCollator(processor, model.config.disease_prompts, model.config.disease_names,
                                args.positive_sentence_rate, data_args.uncertain, seed=args.seed,
                                augment=args.augment, strict_images=data_args.strict_images)
    eval_dataset = studies[data_args.eval_split] if data_args.eval_split in studies else None
    if args.label_names is None:  # disease_label_mask is optional: do not require it for eval loss
        args.label_names = ["disease_labels"]
    trainer = TRRGPretrainer(model=model, args=args, train_dataset=train, eval_dataset=eval_dataset,
                             data_collator=collator, processing_class=processor)
    return trainer, processor


def load_stage1(args: TRRGPretrainArguments):
    """A stage-1 folder (validated to be one) or a fresh model from a preset."""
    from trrg.trainers.init_model import build_contrastive
    from trrg.trainers.presets import PRESETS

    if args.model in PRESETS:
        return build_contrastive(args.model, args.vision, args.text, seed=args.seed)
    from trrg.trainers.checkpoints import load_model_folder

    return load_model_folder(args.model, expected="trrg_contrastive")


def main(argv: list[str] | None = None) -> int:
    from trrg.trainers.checkpoints import parse_with_resume

    from trrg.trainers.presets import recipe_argv

    argv = recipe_argv(list(sys.argv[1:] if argv is None else argv), stage=1)
    args, data_args = parse_with_resume((TRRGPretrainArguments, TRRGDataArguments), argv, "trrg pretrain", __doc__)
    trainer, processor = build_pretrainer(args, data_args)
    from trrg.trainers.checkpoints import resume_point

    trainer.train(resume_from_checkpoint=resume_point(args))
    from trrg.trainers.checkpoints import save_log_history

    save_log_history(trainer, args.output_dir)
    final = Path(args.output_dir) / "final"
    if trainer.is_world_process_zero():
        from trrg.trainers.presets import save_hub_folder

        save_hub_folder(trainer.model, processor, final)
        print(f"stage-1 model written to {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
