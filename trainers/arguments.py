"""Argument dataclasses of both stages (every ``TrainingArguments`` option is available too)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

REPORT_TO_HELP = "logging integrations, e.g. `--report_to tensorboard wandb` or `all` (default none: offline)"


def _no_reporting() -> list[str]:
    """Default of ``report_to``: no logging integration.

    A list from a default_factory, not ``default="none"``: HfArgumentParser turns a ``str | list[str]``
    field into ``nargs="+"`` and keeps only a default_factory's value, so a plain string default
    reached TrainingArguments as ``None``, became ``[None]`` and the Trainer refused to start.
    """
    return ["none"]


@dataclass
class TRRGDataArguments:
    data: str = field(default=None, metadata={"help": "R2Gen annotation.json (or its folder), a JSON/JSONL file, or an imagefolder with metadata.jsonl"})
    image_root: str | None = field(default=None, metadata={"help": "folder the image paths are relative to (default: <annotation folder>/images)"})
    train_split: str = field(default="train", metadata={"help": "split to train on"})
    eval_split: str = field(default="val", metadata={"help": "split to evaluate on ('' for none)"})
    max_train_studies: int | None = field(default=None, metadata={"help": "use only the first N training studies"})
    max_eval_studies: int | None = field(default=None, metadata={"help": "use only the first N evaluation studies"})
    uncertain: str = field(default="positive", metadata={"help": "how uncertain (-1) labels count as targets: positive | negative"})
    strict_images: bool = field(default=False, metadata={"help": "raise on an unreadable image instead of skipping and counting it"})


@dataclass
class TRRGPretrainArguments(TrainingArguments):
    """Stage 1: contrastive pre-training of the image encoder."""

    model: str = field(default="tiny", metadata={"help": "a stage-1 folder (trrg init --stage 1) or a preset name (tiny, base)"})
    vision: str | None = field(default=None, metadata={"help": "vision backbone path / hub id (with a preset)"})
    text: str | None = field(default=None, metadata={"help": "text encoder path / hub id (with a preset)"})
    positive_sentence_rate: float = field(default=0.7, metadata={"help": "probability of sampling a sentence that states a finding (counters negated-sentence flooding)"})
    prompt_pos_weight_power: float = field(default=0.5, metadata={"help": "positives of the prompt loss are weighted ((1-prevalence)/prevalence)**power; 0 disables"})
    augment: bool = field(default=False, metadata={"help": "light X-ray augmentation (small affine, brightness/contrast)"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "kept False: the collators read the study columns"})
    report_to: str | list[str] = field(default_factory=_no_reporting, metadata={"help": REPORT_TO_HELP})


@dataclass
class TRRGFinetuneArguments(TrainingArguments):
    """Stage 2: report generation with clue injection / interaction and the consistency loss."""

    model: str = field(default=None, metadata={"help": "a stage-2 folder (trrg bridge / trrg init) to fine-tune"})
    pretrain_model: str | None = field(default=None, metadata={"help": "instead of --model: a stage-1 folder, bridged to --llm"})
    llm: str | None = field(default=None, metadata={"help": "with --pretrain_model: causal LM path / hub id (default: the preset's)"})
    preset: str = field(default="tiny", metadata={"help": "with --pretrain_model: preset for the LLM and clue sizes"})
    freeze_vision: bool = field(default=True, metadata={"help": "keep the stage-1 vision encoder and zero-shot head frozen"})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on the LLM (0: train the LLM fully, sensible only for tiny LLMs)"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_target_modules: str = field(default="q_proj,k_proj,v_proj,o_proj", metadata={"help": "comma-separated LLM module names for LoRA"})
    lora_vision: bool = field(default=False, metadata={"help": "also put LoRA on the vision encoder's linear/conv layers (needs --freeze_vision False semantics)"})
    use_clue_injection: bool | None = field(default=None, metadata={"help": "override the model's clue injection switch (ablation)"})
    use_clue_interaction: bool | None = field(default=None, metadata={"help": "override the model's clue interaction switch (ablation; only when bridging)"})
    consistency_loss_weight: float | None = field(default=None, metadata={"help": "override lambda of the consistency loss (0 disables)"})
    reference_clue_rate: float = field(default=1.0, metadata={"help": "share of training visits whose clues are the reference labels instead of the model's own decisions (teaches the LLM to write what its clues say)"})
    oversample_rare_findings: bool = field(default=True, metadata={"help": "draw training studies with a rare finding more often (weight max(1, 0.1 / prevalence) of the study's rarest finding)"})
    finding_token_weight: float = field(default=4.0, metadata={"help": "LM-loss weight of the tokens of report sentences that state a finding (1: plain token mean)"})
    calibrate_clue_thresholds: bool = field(default=True, metadata={"help": "before training, tune each disease's clue threshold for F1 on the training split (calling at most 1.5x as many positives as there are); needs the frozen perception"})
    cache_vision_features: bool = field(default=True, metadata={"help": "compute the frozen encoder's features once per study and reuse them every epoch (off when the encoder trains)"})
    generation_max_new_tokens: int = field(default=96, metadata={"help": "report length limit in generation-based evaluation"})
    generation_num_beams: int = field(default=1, metadata={"help": "beams in generation-based evaluation"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "kept False: the collators read the study columns"})
    report_to: str | list[str] = field(default_factory=_no_reporting, metadata={"help": REPORT_TO_HELP})
    metric_for_best_model: str | None = field(default="ce_macro_f1_14", metadata={"help": "best checkpoint by this generation metric"})
    greater_is_better: bool | None = field(default=True, metadata={"help": "for metric_for_best_model"})
