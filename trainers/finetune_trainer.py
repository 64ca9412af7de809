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
import torch.distributed as dist
from transformers import Trainer

from trrg.assembly.bridge import bridge
from trrg.assembly.hub_folders import load_model_folder
from trrg.evaluation.generation import generate_reports
from trrg.evaluation.score import score_reports
from trrg.modeling.modeling_trrg import weighted_disease_bce
from trrg.processing.studies.schema import CachedStudyReader
from trrg.trainers.arguments import TRRGDataArguments, TRRGFinetuneArguments, stage_options
from trrg.trainers.clue_calibration import calibrate_clue_thresholds
from trrg.trainers.collators import (
    FinetuneCollator,
    FrozenVisionCache,
    StudyCollatorMixin,
    iter_rows,
    rare_finding_weights,
    study_columns_kept,
)
from trrg.trainers.distributed import (
    broadcast_object,
    evaluation_share,
    full_parameters,
    gather_objects,
    unique_by_id,
    world_size,
)
from trrg.trainers.loss_parts import LossPartsMixin
from trrg.trainers.training_distribution import record_training_distribution
from trrg.trainers.training_data import (
    evaluation_split,
    load_training_studies,
    replay_calibration_studies,
    training_data_label,
)

logger = logging.getLogger(__name__)


def average_weights(module: torch.nn.Module, starting: dict[str, torch.Tensor], weight: float) -> None:
    """``module``'s floating-point weights and buffers become ``weight`` * theirs + (1 - weight) * ``starting``
    (the same names): an adapted model averaged with the one it started from, in weight space."""
    state = module.state_dict()
    module.load_state_dict({name: torch.lerp(starting[name].to(value.device, value.dtype), value, weight)
                            if value.is_floating_point() else value for name, value in state.items()})


def _unwrap(model):
    return getattr(model, "module", model)


class TRRGFinetuneTrainer(LossPartsMixin, StudyCollatorMixin, Trainer):
    """``Trainer`` for ``TRRGForConditionalGeneration`` with generation-based evaluation.

    Called the Hugging Face way (``model=, args=, train_dataset=, eval_dataset=, processing_class=``),
    it does everything ``TRRGFinetuneArguments`` documents, as ``trrg finetune`` does: freezing and LoRA,
    the study collator, rare-finding sampling, and before training (``train``) the frozen features
    cached per study and the clue thresholds tuned on the training split. ``data_args``
    (``TRRGDataArguments``) says how uncertain labels count and whether unreadable images stop the run.
    """

    loss_parts = ("lm_loss", "consistency_loss")

    def __init__(self, model=None, args=None, data_collator=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, *more, data_args: TRRGDataArguments | None = None, **kwargs):
        study_columns_kept(args)
        self.options = stage_options(args, TRRGFinetuneArguments)
        self.data_args = data_args or TRRGDataArguments()
        if model is not None:
            prepare_for_training(model, self.options)  # freezing and LoRA, as the arguments say
            if train_dataset is not None:  # the exported model says what it was fine-tuned on
                model.config.trrg_training_data = training_data_label(train_dataset)
        _evaluation_settings(args, eval_dataset)
        self.vision_cache = None
        if data_collator is None and processing_class is not None and not more:
            # The study collator, whichever way the trainer is built; frozen features are cached when they can be.
            data_collator = FinetuneCollator.from_arguments(processing_class, self.options, self.data_args)
            if model is not None and self.options.cache_vision_features and _features_are_frozen(model, self.options):
                self.vision_cache = FrozenVisionCache(model)
        self.sampling_weights = None
        if self.options.oversample_rare_findings and train_dataset is not None:
            self.sampling_weights = rare_finding_weights(train_dataset["labels"], self.data_args.uncertain)
        self.generation_kwargs = {"max_new_tokens": self.options.generation_max_new_tokens,
                                  "num_beams": self.options.generation_num_beams}
        self._perception_prepared = False
        super().__init__(model, args, data_collator, train_dataset, eval_dataset, processing_class, *more, **kwargs)

    def train(self, *args, **kwargs):
        self.prepare_perception()
        model = self.accelerator.unwrap_model(self.model)
        weight = self.options.adapted_perception_weight
        starting = ({name: value.detach().clone() for name, value in model.perception.state_dict().items()}
                    if self.options.adapt_perception and weight != 1.0 else None)
        result = super().train(*args, **kwargs)
        if starting is not None:
            average_weights(model.perception, starting, weight)
            logger.info("perception: %.2f x the adapted weights + %.2f x the weights before", weight, 1 - weight)
        if self.options.adapt_perception and self.options.calibrate_clue_thresholds:
            # The perception changed: its thresholds are tuned again, on the site's training studies and, with
            # replay, on original studies it was not trained on.
            rows = self.train_dataset
            if self.data_args.replay_data:
                rows = replay_calibration_studies(rows, self.data_args, self.args.seed)
                if rows is self.train_dataset:
                    logger.warning("clue thresholds re-tuned on the training split, replayed studies included: it is "
                                   "not load_training_studies(data_args, seed=args.seed)'s mix, or --replay_data has "
                                   "too few studies left to tune them on original studies that were not replayed")
            thresholds = calibrate_clue_thresholds(model, self.processing_class, rows, self.data_args.uncertain)
            logger.info("clue thresholds re-tuned on %d studies after adapting the perception: %s", len(rows), thresholds)
        record_training_distribution(self)
        return result

    def prepare_perception(self) -> None:
        """Once, before training, in this process and on the training device: cache the frozen encoder's
        features of the training and evaluation studies, then tune the clue thresholds on the training
        split (``calibrate_clue_thresholds``). Every process does the same and gets the same thresholds."""
        if self._perception_prepared or self.train_dataset is None:
            return
        self._perception_prepared = True
        model, collator = self.accelerator.unwrap_model(self.model), self.data_collator
        if self.vision_cache is not None:
            # A reader that keeps no decoded image: once encoded, a study's images are never read again.
            reader = CachedStudyReader(strict=collator.reader.strict, max_cached_studies=0)
            for dataset in (self.train_dataset, self.eval_dataset):
                if dataset is not None and not self.vision_cache.fill(dataset, reader, self.processing_class.image_processor):
                    self.vision_cache = None
                    break
            collator.vision_index = self.vision_cache.index if self.vision_cache is not None else None
        if (self.options.calibrate_clue_thresholds and model.perception_frozen
                and model.config.clue_config.use_clue_injection):
            # The training split: a validation split rarely holds enough positives of the rare findings
            # (200 phantom studies: 3-10 each), and the frozen encoder is not trained here.
            thresholds = calibrate_clue_thresholds(model, self.processing_class, self.train_dataset,
                                                   self.data_args.uncertain, self.vision_cache)
            logger.info("clue thresholds tuned on %d training studies: %s", len(self.train_dataset), thresholds)

    def _prepare_inputs(self, inputs):
        """The cached features of the batch's studies (the collator sends their slots), on the device."""
        inputs = super()._prepare_inputs(inputs)
        slots = inputs.pop("vision_feature_slots", None)
        if slots is not None:
            features = self.vision_cache.features_for(slots.cpu(), inputs["view_mask"])
            dtype = self.accelerator.unwrap_model(self.model).dtype
            inputs["vision_features"] = type(features)(**{k: v.to(dtype) for k, v in features.items()})
        return inputs

    def _get_train_sampler(self, train_dataset=None):
        """Studies drawn with replacement by ``sampling_weights`` (rare findings more often), when set."""
        if self.sampling_weights is None:
            return super()._get_train_sampler(train_dataset)
        generator = torch.Generator().manual_seed(self.args.seed)
        return torch.utils.data.WeightedRandomSampler(self.sampling_weights, len(self.sampling_weights), generator=generator)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if self.options.adapt_perception:  # the perception's own prompt loss; the writer is frozen
            outputs.loss = perception_loss(outputs.disease_probs, inputs["disease_labels"],
                                           _unwrap(model).perception.disease_pos_weight)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
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
        """The evaluation loss plus the generation metrics, the same on every process (each generates
        for its share of the studies; the predictions are gathered and scored once)."""
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            return metrics
        scores = {f"{metric_key_prefix}_{k}": v for k, v in self.generation_scores(dataset).items()}
        metrics.update(scores)
        self.log(scores)
        return metrics

    def generation_scores(self, dataset) -> dict[str, float]:
        """Generate for every study of ``dataset`` and score against its reports (no METEOR: speed).

        Each process generates for its strided share of the studies, padded to equal length so that
        sharded models (FSDP, ZeRO-3) run their collectives in step; the predictions of all processes
        are gathered, and the main process's scores are broadcast, so every process returns the same
        metrics (``metric_for_best_model`` is read on each)."""
        model = self.accelerator.unwrap_model(self.model)
        predictions = generate_on_every_process(model, self.processing_class, dataset,
                                                self.args.per_device_eval_batch_size, **self.generation_kwargs)
        scores = None
        if self.accelerator.is_main_process:
            references = {row["id"]: row["report"] for row in iter_rows(dataset)}
            scored = score_reports([p["report"] for p in predictions], [references[p["id"]] for p in predictions],
                                   meteor=False)
            scores = {k: v for k, v in scored.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and "/" not in k}
        return broadcast_object(scores)


def generate_on_every_process(model, processor, dataset, batch_size: int, **generation) -> list[dict]:
    """``generate_reports`` for ``dataset``, each process generating for its share (``evaluation_share``),
    a sharded model's parameters gathered for the duration (``full_parameters``); every process gets
    all predictions, one per readable study, in rank order."""
    rank, world = (dist.get_rank(), world_size()) if world_size() > 1 else (0, 1)
    rows = [dataset[i] for i in evaluation_share(len(dataset), rank, world)]
    with full_parameters(model):
        predictions = generate_reports(model, processor, rows, batch_size=batch_size, **generation)
    return unique_by_id(gather_objects(predictions))


def perception_loss(disease_probs: torch.Tensor, disease_labels: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    """Stage 1's disease-prompt loss on stage 2's zero-shot probabilities (the forward's ``disease_probs``:
    through the model's forward, so DDP sees the step). logit(sigmoid(z)) = z, clamped away from 0 and 1."""
    logits = torch.logit(disease_probs.float().clamp(1e-6, 1 - 1e-6))
    return weighted_disease_bce(logits, disease_labels.to(logits), pos_weight.to(logits))


def _evaluation_settings(args, eval_dataset) -> None:
    """The forward also takes disease_labels/disease_label_mask (optional): only ``labels`` are labels;
    without an evaluation split there is no best checkpoint to load."""
    if args is None:
        return
    if args.label_names is None:
        args.label_names = ["labels"]
    if eval_dataset is None or str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "no":
        args.load_best_model_at_end = False


def prepare_for_training(model, args: TRRGFinetuneArguments):
    """The consistency-loss weight, the freezing policy and LoRA, as ``args`` say. Frozen: the stage-1
    perception when ``freeze_vision``. Applied once per model (``TRRGFinetuneTrainer`` calls it)."""
    if getattr(model, "_trrg_prepared_for_training", False):
        return model
    model._trrg_prepared_for_training = True
    if args.consistency_loss_weight is not None:
        model.config.clue_config.consistency_loss_weight = args.consistency_loss_weight
    if args.adapt_perception:  # only the perception trains (the temperature stays: the prompt bank is fixed)
        model.requires_grad_(False)
        model.perception.requires_grad_(True)
        model.perception.logit_scale.requires_grad_(False)
        return model
    if args.freeze_vision:
        model.freeze_perception()
    if args.lora_r > 0:
        model.language_model = _with_lora(model.language_model, args, lora_targets(model.language_model, args))
    if args.lora_vision:
        backbone = model.vision_model.backbone
        targets = _linear_names(backbone)
        if not targets:  # a convolutional encoder: LoRA here would adapt nothing
            raise ValueError(f"--lora_vision: the vision encoder ({type(backbone).__name__}) has no linear layers for "
                             "LoRA; train it whole with --freeze_vision false, or drop --lora_vision")
        model.vision_model.backbone = _with_lora(backbone, args, targets)
    return model


def lora_targets(language_model, args) -> list[str]:
    """``--lora_target_modules``, or for "auto" what fits the LLM's architecture."""
    if args.lora_target_modules.strip() in ("", "auto"):
        from trrg.trainers.lora_targets import default_lora_targets

        return default_lora_targets(language_model)
    return args.lora_target_modules.split(",")


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
    return model, processor


def build_finetuner(args: TRRGFinetuneArguments, data_args: TRRGDataArguments, model=None, processor=None, studies=None):
    """Model and data from the argument dataclasses, and the ``TRRGFinetuneTrainer`` over them; returns
    (trainer, processor). Everything the arguments document happens inside the trainer, so this and
    ``TRRGFinetuneTrainer(model=, args=, train_dataset=, processing_class=)`` train the same model."""
    if model is None:
        model, processor = load_finetune_model(args)
    studies = studies if studies is not None else load_training_studies(data_args, args.seed)
    eval_dataset = evaluation_split(studies, data_args, args.eval_strategy)
    trainer = TRRGFinetuneTrainer(model=model, args=args, train_dataset=studies[data_args.train_split],
                                  eval_dataset=eval_dataset, processing_class=processor, data_args=data_args)
    return trainer, processor


def _features_are_frozen(model, args) -> bool:
    return model.perception_frozen and not args.lora_vision and not args.adapt_perception
