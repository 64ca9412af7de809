"""Stage 2 (finetune): ``TRRGFinetuneTrainer``, the ``Trainer`` of ``TRRGForConditionalGeneration``.

Trains the LM loss and the disease-aware consistency loss (logged apart as ``lm_loss`` and
``consistency_loss``). Evaluation generates reports for the evaluation split and adds the
clinical-efficacy and NLG metrics (``eval_ce_macro_f1_14``, ``eval_bleu_4``, ...); the best
checkpoint is chosen by ``--metric_for_best_model`` (default CE macro-F1 over the 14 observations).
"""

from __future__ import annotations

import logging
import warnings

import torch
from transformers import Trainer

from trrg.assembly.bridge import bridge
from trrg.assembly.hub_folders import load_model_folder
from trrg.evaluation.generation import generate_reports
from trrg.evaluation.score import score_reports
from trrg.trainers.arguments import TRRGDataArguments, TRRGFinetuneArguments
from trrg.trainers.clue_calibration import calibrate_clue_thresholds
from trrg.trainers.collators import (
    FinetuneCollator,
    FrozenVisionCache,
    StudyCollatorMixin,
    rare_finding_weights,
    study_columns_kept,
)
from trrg.trainers.distributed import world_size
from trrg.trainers.loss_parts import LossPartsMixin
from trrg.trainers.training_data import evaluation_split, load_training_studies, training_data_name

logger = logging.getLogger(__name__)


def _unwrap(model):
    return getattr(model, "module", model)


class TRRGFinetuneTrainer(LossPartsMixin, StudyCollatorMixin, Trainer):
    """``Trainer`` for ``TRRGForConditionalGeneration`` with generation-based evaluation."""

    loss_parts = ("lm_loss", "consistency_loss")

    def __init__(self, *args, generation_kwargs: dict | None = None, sampling_weights: torch.Tensor | None = None,
                 **kwargs):
        study_columns_kept(kwargs.get("args"))
        if isinstance(kwargs.get("args"), TRRGFinetuneArguments) and kwargs.get("model") is not None:
            prepare_for_training(kwargs["model"], kwargs["args"])  # freezing and LoRA, as the arguments say
        if kwargs.get("data_collator") is None and len(args) < 3 and kwargs.get("processing_class") is not None:
            # The standard call, Trainer(model=, args=, train_dataset=, processing_class=), gets the study collator.
            kwargs["data_collator"] = _default_collator(kwargs["processing_class"], kwargs.get("args"))
        super().__init__(*args, **kwargs)
        self.generation_kwargs = generation_kwargs or {}
        self.sampling_weights = sampling_weights

    def _get_train_sampler(self, train_dataset=None):
        """Studies drawn with replacement by ``sampling_weights`` (rare findings more often), when given."""
        if self.sampling_weights is None:
            return super()._get_train_sampler(train_dataset)
        generator = torch.Generator().manual_seed(self.args.seed)
        return torch.utils.data.WeightedRandomSampler(self.sampling_weights, len(self.sampling_weights), generator=generator)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if world_size() > 1 and outputs.lm_loss is not None:
            outputs = self._global_token_mean(model, inputs, outputs)
        self.record_loss_parts(outputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def _global_token_mean(self, model, inputs, outputs):
        """Re-weight the LM loss so that, after DDP averages over processes, it is the mean over the
        tokens of the whole global batch (as in one process), not a mean of per-process means."""
        counted = (inputs["labels"][:, 1:] != -100).to(outputs.lm_loss.dtype)
        if inputs.get("label_weights") is not None:  # a weighted mean: its denominator is the weight sum
            counted = counted * inputs["label_weights"][:, 1:].to(outputs.lm_loss.dtype)
        local_tokens = counted.sum()
        global_tokens = local_tokens.detach().clone()
        torch.distributed.all_reduce(global_tokens)
        share = local_tokens * world_size() / global_tokens.clamp_min(1)
        outputs.lm_loss = outputs.lm_loss * share
        weight = _unwrap(model).config.clue_config.consistency_loss_weight
        consistency = outputs.consistency_loss if outputs.consistency_loss is not None else 0.0
        outputs.loss = outputs.lm_loss + weight * consistency
        return outputs

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None or not self.is_world_process_zero():
            return metrics
        scores = self.generation_scores(dataset)
        metrics.update({f"{metric_key_prefix}_{k}": v for k, v in scores.items()})
        self.log({f"{metric_key_prefix}_{k}": v for k, v in scores.items()})
        return metrics

    def generation_scores(self, dataset) -> dict[str, float]:
        """Generate for every study of ``dataset`` and score against its reports (no METEOR: speed)."""
        rows = list(dataset)
        model = self.accelerator.unwrap_model(self.model)
        predictions = generate_reports(model, self.processing_class, rows, batch_size=self.args.per_device_eval_batch_size,
                                       **self.generation_kwargs)
        by_id = {row["id"]: row["report"] for row in rows}
        scores = score_reports([p["report"] for p in predictions], [by_id[p["id"]] for p in predictions], meteor=False)
        return {k: v for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and "/" not in k}


def _default_collator(processor, args) -> FinetuneCollator:
    """The collator ``build_finetuner`` would build, from whatever of its options ``args`` has."""
    return FinetuneCollator(processor, reference_clue_rate=getattr(args, "reference_clue_rate", 1.0),
                            seed=getattr(args, "seed", 42), finding_token_weight=getattr(args, "finding_token_weight", 4.0),
                            single_view_rate=getattr(args, "single_view_rate", 0.0))


def prepare_for_training(model, args: TRRGFinetuneArguments):
    """Freezing policy and LoRA. Frozen: the stage-1 perception when ``freeze_vision``. Applied once
    per model (``build_finetuner`` and ``TRRGFinetuneTrainer`` both call it)."""
    if getattr(model, "_trrg_prepared_for_training", False):
        return model
    model._trrg_prepared_for_training = True
    if args.freeze_vision:
        model.freeze_perception()
    if args.lora_r > 0:
        model.language_model = _with_lora(model.language_model, args, args.lora_target_modules.split(","))
    if args.lora_vision:
        backbone = model.vision_model.backbone
        targets = _linear_names(backbone)
        if not targets:  # a convolutional encoder: LoRA here would adapt nothing
            raise ValueError(f"--lora_vision: the vision encoder ({type(backbone).__name__}) has no linear layers for "
                             "LoRA; train it whole with --freeze_vision false, or drop --lora_vision")
        model.vision_model.backbone = _with_lora(backbone, args, targets)
    return model


def _with_lora(module, args, targets):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=args.lora_r or 8, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                        target_modules=[t.strip() for t in targets if t.strip()], bias="none")
    with warnings.catch_warnings():
        # peft 0.21 reads model.is_gradient_checkpointing, which transformers 5.24 deprecates in
        # favour of is_activation_checkpointing: a warning about peft's code, not about this run.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(module, config)


def _linear_names(module) -> list[str]:
    import torch.nn as nn

    return sorted({name.rsplit(".", 1)[-1] for name, child in module.named_modules() if isinstance(child, nn.Linear)})


def load_finetune_model(args: TRRGFinetuneArguments):
    """The stage-2 folder of ``--model``, or a stage-1 folder (``--pretrain_model``) bridged to ``--llm``."""
    clue = {k: v for k, v in {"use_clue_injection": args.use_clue_injection,
                             "use_clue_interaction": args.use_clue_interaction}.items() if v is not None}
    if args.pretrain_model:
        model, processor = bridge(args.pretrain_model, args.llm, args.preset, clue=clue, seed=args.seed)
    elif args.model:
        if clue:
            raise ValueError("--use_clue_injection/--use_clue_interaction change the architecture: use them with --pretrain_model")
        model, processor = load_model_folder(args.model, expected="trrg")
    else:
        raise ValueError("pass --model (a stage-2 folder) or --pretrain_model (a stage-1 folder to bridge)")
    if args.consistency_loss_weight is not None:
        model.config.clue_config.consistency_loss_weight = args.consistency_loss_weight
    return model, processor


def build_finetuner(args: TRRGFinetuneArguments, data_args: TRRGDataArguments, model=None, processor=None, studies=None):
    """Model, data and ``TRRGFinetuneTrainer`` from the argument dataclasses; returns (trainer, processor).

    Before training, with the perception frozen: the clue thresholds are tuned on the training
    split (``calibrate_clue_thresholds``) and the encoder's features are cached per study.
    """
    if model is None:
        model, processor = load_finetune_model(args)
    prepare_for_training(model, args)
    studies = studies if studies is not None else load_training_studies(data_args)
    if data_args.data:  # the exported model says what it was fine-tuned on (not what it started from)
        model.config.trrg_training_data = training_data_name(data_args.data)
    eval_dataset = evaluation_split(studies, data_args, args.eval_strategy)
    train_dataset = studies[data_args.train_split]
    cache = FrozenVisionCache(model) if args.cache_vision_features and _features_are_frozen(model, args) else None
    # The collator first: its arguments are checked before the calibration's pass over the data.
    collator = FinetuneCollator(processor, data_args.uncertain, data_args.strict_images,
                                reference_clue_rate=args.reference_clue_rate, seed=args.seed, vision_cache=cache,
                                finding_token_weight=args.finding_token_weight, single_view_rate=args.single_view_rate)
    if args.calibrate_clue_thresholds and model.perception_frozen and model.config.clue_config.use_clue_injection:
        # The training split: a validation split rarely holds enough positives of the rare findings
        # (200 phantom studies: 3-10 each), and the frozen encoder is not trained here.
        thresholds = calibrate_clue_thresholds(model, processor, list(train_dataset), data_args.uncertain, cache)
        logger.info("clue thresholds tuned on %d training studies: %s", len(train_dataset), thresholds)
    generation = {"max_new_tokens": args.generation_max_new_tokens, "num_beams": args.generation_num_beams}
    if args.label_names is None:  # the forward also takes disease_labels/disease_label_mask (optional)
        args.label_names = ["labels"]
    if eval_dataset is None or args.eval_strategy == "no":
        args.load_best_model_at_end = False
    weights = rare_finding_weights(train_dataset["labels"], data_args.uncertain) if args.oversample_rare_findings else None
    trainer = TRRGFinetuneTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                                  data_collator=collator, processing_class=processor, generation_kwargs=generation,
                                  sampling_weights=weights)
    return trainer, processor


def _features_are_frozen(model, args) -> bool:
    return model.perception_frozen and not args.lora_vision
