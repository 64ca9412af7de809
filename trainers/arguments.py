"""Argument dataclasses of both stages (every ``TrainingArguments`` option is available too).

Laid out like TRL's config classes: each class documents its fields under "Parameters:" in groups
(``> Parameters that control ...``), and the body declares them in the same groups and order. A field
with a fixed set of values declares ``choices`` in its metadata: ``HfArgumentParser`` hands the metadata
to ``argparse.add_argument``, so a wrong value stops the command at parse time with argparse's error
naming the flag (the field keeps its plain ``str`` type, hence the same value in Python).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from types import SimpleNamespace

import torch
from transformers import TrainingArguments

from trrg.assembly.presets import PRESETS, recipe_options
from trrg.trainers.collators import UNCERTAIN_POLICIES

REPORT_TO_HELP = "logging integrations, e.g. `--report_to tensorboard wandb` or `all` (default none: offline)"
REMOVE_UNUSED_COLUMNS_HELP = "kept False: the collators read the study columns"


def _no_reporting() -> list[str]:
    """Default of ``report_to``: no logging integration.

    A list from a default_factory, not ``default="none"``: HfArgumentParser turns a ``str | list[str]``
    field into ``nargs="+"`` and keeps only a default_factory's value, so a plain string default
    reached TrainingArguments as ``None``, became ``[None]`` and the Trainer refused to start.
    """
    return ["none"]


def _pin_memory_only_with_an_accelerator(args: TrainingArguments) -> None:
    """Pinned host memory only speeds up copies to an accelerator. Without one, torch's DataLoader
    does not pin anyway and warns "'pin_memory' argument is set as true but no accelerator is
    found" on every run; TrainingArguments turns pinning off only for ``use_cpu``, so a plain run on
    a CPU-only machine warned. Same test as the DataLoader's (``torch.accelerator``, not only CUDA),
    so this changes nothing but the warning."""
    if args.dataloader_pin_memory and not torch.accelerator.is_available():
        args.dataloader_pin_memory = False


def stage_options(args, stage_class) -> "TrainingArguments | SimpleNamespace":
    """``args`` when it is a ``stage_class``; otherwise (plain ``TrainingArguments`` or None handed to a
    TRRG trainer) every field of ``stage_class`` at its declared default, overlaid with what ``args``
    has. Each default is thus declared once, in the dataclass, whichever way a trainer is built."""
    if isinstance(args, stage_class):
        return args
    defaults = {f.name: f.default_factory() if f.default_factory is not MISSING else f.default
                for f in fields(stage_class) if f.init}
    return SimpleNamespace(**{name: getattr(args, name, value) for name, value in defaults.items()})


@dataclass
class TRRGDataArguments:
    r"""
    The studies a training run reads (``trrg.trainers.training_data.load_training_studies``); both
    stages take them.

    Parameters:
        > Parameters that control the data source

        data (`str`, *optional*):
            An R2Gen ``annotation.json`` (or its folder, e.g. from ``trrg phantom``), a JSON/JSONL file, or an
            imagefolder with ``metadata.jsonl``. Required by the training commands.
        image_root (`str` or `None`, *optional*):
            Folder the image paths of ``data`` are relative to. If `None`, ``<annotation folder>/images``.

        > Parameters that control the splits

        train_split (`str`, *optional*, defaults to `"train"`):
            Split to train on; ``data`` must have it.
        eval_split (`str`, *optional*, defaults to `"val"`):
            Split to evaluate on; `""` (or a split ``data`` lacks) for no evaluation.
        max_train_studies (`int` or `None`, *optional*):
            Use only the first N studies of the training split. If `None`, all of them.
        max_eval_studies (`int` or `None`, *optional*):
            Use only the first N studies of the evaluation split. If `None`, all of them.
        replay_data (`str` or `None`, *optional*):
            Studies of the data the model was first trained on (a folder or file as ``data``), mixed into
            the training split so that fine-tuning on a new site does not forget the original
            (docs/site_adaptation). Evaluation stays on ``data``. If `None`, no replay.
        replay_studies (`int` or `None`, *optional*):
            How many training studies of ``replay_data`` to mix in, drawn at random with the run's seed.
            If `None`, as many as ``data``'s training split holds. With ``adapt_perception``, as many more
            (the next of the same draw) tune the clue thresholds after training.

        > Parameters that control the labels and images

        uncertain (`str`, *optional*, defaults to `"positive"`):
            How uncertain (-1) CheXpert labels count as training targets. Must be one of `"positive"` or
            `"negative"`.
        strict_images (`bool`, *optional*, defaults to `False`):
            Raise on an unreadable image instead of skipping it and counting it.
    """

    # Parameters that control the data source
    data: str = field(
        default=None,
        metadata={
            "help": "R2Gen annotation.json (or its folder), a JSON/JSONL file, or an imagefolder with "
            "metadata.jsonl"
        },
    )
    image_root: str | None = field(
        default=None,
        metadata={"help": "folder the image paths are relative to (default: <annotation folder>/images)"},
    )

    # Parameters that control the splits
    train_split: str = field(default="train", metadata={"help": "split to train on"})
    eval_split: str = field(default="val", metadata={"help": "split to evaluate on ('' for none)"})
    max_train_studies: int | None = field(
        default=None, metadata={"help": "use only the first N training studies"}
    )
    max_eval_studies: int | None = field(
        default=None, metadata={"help": "use only the first N evaluation studies"}
    )
    replay_data: str | None = field(
        default=None,
        metadata={"help": "studies of the model's original training data mixed into the training split, so that "
                  "fine-tuning on a new site does not forget the original (evaluation stays on --data)"},
    )
    replay_studies: int | None = field(
        default=None,
        metadata={"help": "how many of --replay_data's training studies to mix in (default: as many as --data's "
                  "training split)"},
    )

    # Parameters that control the labels and images
    uncertain: str = field(
        default="positive",
        metadata={
            "help": "how uncertain (-1) labels count as targets",
            "choices": list(UNCERTAIN_POLICIES),
        },
    )
    strict_images: bool = field(
        default=False, metadata={"help": "raise on an unreadable image instead of skipping and counting it"}
    )


@dataclass
class TRRGPretrainArguments(TrainingArguments):
    r"""
    Stage 1: contrastive pre-training of the image encoder (``TRRGPretrainer``).

    This class holds only the parameters of stage 1; every [`~transformers.TrainingArguments`] option is
    available too. ``trrg pretrain`` puts the preset's recipe (``trrg.assembly.presets.RECIPES``) in front of
    the command line, so its learning rate, batch sizes, epochs and schedule differ from transformers'
    defaults. ``dataloader_pin_memory`` is turned off when no accelerator is available (torch would not pin
    and would warn).

    Parameters:
        > Parameters that control the model

        model (`str`, *optional*, defaults to `"tiny"`):
            A stage-1 folder (``trrg init --stage pretrain``) to continue from, or a preset name (one of the keys of
            ``trrg.assembly.presets.PRESETS``, e.g. `"tiny"`, `"base"`) to build a fresh model.
        vision (`str` or `None`, *optional*):
            With a preset: the vision backbone's local folder or hub id, instead of the preset's.
        text (`str` or `None`, *optional*):
            With a preset: the text encoder's local folder or hub id, instead of the preset's.

        > Parameters that control the data

        positive_sentence_rate (`float`, *optional*, defaults to `0.7`):
            Probability of sampling a report sentence that states a finding, which counters the flood of
            negated sentences in radiology reports.
        augment (`bool`, *optional*, defaults to `False`):
            Light X-ray augmentation: a small affine transform and brightness/contrast changes.
        single_view_rate (`float`, *optional*, defaults to `0`):
            Share of the training visits of a multi-view study that show only its first (frontal) view. Stage
            1 reads every multi-view study with all its views and with its first view alone at once (the config's
            ``first_view_prompt_loss_weight``), which reads one-view studies better than hiding views and
            costs the multi-view reading nothing (docs/RESULTS.md, issue 20's probes); so `0`. Evaluation
            batches always show every view.

        > Parameters that control the loss

        prompt_pos_weight_power (`float`, *optional*, defaults to `0.5`):
            Positives of the disease-prompt loss are weighted ``((1 - prevalence) / prevalence) ** power``;
            `0` disables the weighting.

        > Parameters that override `TrainingArguments` defaults

        remove_unused_columns (`bool`, *optional*, defaults to `False`):
            Kept `False`: the collators read the study columns.
        report_to (`str` or `list[str]`, *optional*, defaults to `["none"]`):
            Logging integrations, e.g. `tensorboard wandb`, or `"all"`. The default logs nowhere (offline).
    """

    # Parameters that control the model
    model: str = field(
        default="tiny",
        metadata={"help": "a stage-1 folder (trrg init --stage pretrain) or a preset name (tiny, base)"},
    )
    vision: str | None = field(
        default=None, metadata={"help": "vision backbone path / hub id (with a preset)"}
    )
    text: str | None = field(default=None, metadata={"help": "text encoder path / hub id (with a preset)"})

    # Parameters that control the data
    positive_sentence_rate: float = field(
        default=0.7,
        metadata={
            "help": "probability of sampling a sentence that states a finding (counters negated-sentence "
            "flooding)"
        },
    )
    augment: bool = field(
        default=False, metadata={"help": "light X-ray augmentation (small affine, brightness/contrast)"}
    )
    single_view_rate: float = field(
        default=0.0,
        metadata={"help": "share of training visits of a multi-view study shown with its first (frontal) view only"},
    )

    # Parameters that control the loss
    prompt_pos_weight_power: float = field(
        default=0.5,
        metadata={
            "help": "positives of the prompt loss are weighted ((1-prevalence)/prevalence)**power; 0 disables"
        },
    )

    # Parameters that override `TrainingArguments` defaults
    remove_unused_columns: bool = field(default=False, metadata={"help": REMOVE_UNUSED_COLUMNS_HELP})
    report_to: str | list[str] = field(default_factory=_no_reporting, metadata={"help": REPORT_TO_HELP})

    def __post_init__(self):
        super().__post_init__()
        _pin_memory_only_with_an_accelerator(self)

    @classmethod
    def from_recipe(cls, preset: str = "tiny", **options) -> "TRRGPretrainArguments":
        """What ``trrg pretrain --model PRESET`` trains with: the preset's recipe
        (``trrg.assembly.presets.RECIPES``), then ``options`` (``output_dir=...`` etc.)."""
        return cls(**{"model": preset, **recipe_options(preset, "pretrain"), **options})


@dataclass
class TRRGFinetuneArguments(TrainingArguments):
    r"""
    Stage 2: report generation with clue injection / interaction and the consistency loss
    (``TRRGFinetuneTrainer``).

    This class holds only the parameters of stage 2; every [`~transformers.TrainingArguments`] option is
    available too. ``trrg finetune`` puts the preset's recipe (``trrg.assembly.presets.RECIPES``; the preset
    named by ``--preset``) in front of the command line, so its learning rate, batch sizes, epochs and
    schedule differ from transformers' defaults. ``dataloader_pin_memory`` is turned off when no accelerator
    is available (torch would not pin and would warn).

    Parameters:
        > Parameters that control the model

        model (`str`, *optional*):
            A stage-2 folder (``trrg bridge`` / ``trrg init``) to fine-tune. Give this or ``pretrain_model``.
        pretrain_model (`str` or `None`, *optional*):
            Instead of ``model``: a stage-1 folder, bridged here to the causal LM ``llm``.
        llm (`str` or `None`, *optional*):
            With ``pretrain_model``: the causal LM's local folder or hub id. If `None`, the preset's.
        preset (`str`, *optional*, defaults to `"tiny"`):
            With ``pretrain_model``: the preset that sizes the LLM and the clue modules; also picks the
            training recipe of ``trrg finetune``. Must be one of the keys of ``trrg.assembly.presets.PRESETS``
            (`"tiny"`, `"base"`).
        freeze_vision (`bool`, *optional*, defaults to `True`):
            Keep the stage-1 perception (vision encoder and zero-shot head) frozen, in eval mode.
        adapt_perception (`bool`, *optional*, defaults to `False`):
            Train only the zero-shot perception (vision encoder and projections, batch norm included), under its
            disease-prompt loss against the data's report labels, the report writer frozen; the clue thresholds
            are re-tuned on the training split afterwards (with ``replay_data``: on the site's training studies
            and as many original training studies that were not replayed). For a new site whose images the model
            reads badly (docs/site_adaptation); ``trrg finetune`` then takes the preset's "adapt" recipe.
        adapted_perception_weight (`float`, *optional*, defaults to `1.0`):
            With ``adapt_perception``: the perception kept after training is this share of the adapted
            weights plus the rest of the weights it started from (weight-space averaging), before the
            thresholds are re-tuned. `1.0` keeps the adapted weights; the "adapt" recipe sets `0.5`, which
            kept the original rendering's CE within 0.01 while the site gained (docs/site_adaptation).

        > Parameters that control LoRA

        lora_r (`int`, *optional*, defaults to `0`):
            LoRA rank on the LLM. `0` trains the LLM fully, which is sensible only for tiny LLMs.
        lora_alpha (`int`, *optional*, defaults to `32`):
            LoRA alpha (scaling numerator).
        lora_dropout (`float`, *optional*, defaults to `0.05`):
            Dropout on the LoRA branch.
        lora_target_modules (`str`, *optional*, defaults to `"auto"`):
            Comma-separated names of the LLM modules that get LoRA. `"auto"`: what fits the LLM's architecture
            (peft's defaults for it, else the linear layers of its attention).
        lora_vision (`bool`, *optional*, defaults to `False`):
            Also put LoRA on the vision encoder's linear layers; its features are then not cached.

        > Parameters that control the clues

        use_clue_injection (`bool` or `None`, *optional*):
            Override the model's clue injection switch (ablation). Only with ``pretrain_model``: it changes the
            architecture. If `None`, the model's setting.
        use_clue_interaction (`bool` or `None`, *optional*):
            Override the model's clue interaction switch (ablation). Only with ``pretrain_model``. If `None`,
            the model's setting.
        reference_clue_rate (`float`, *optional*, defaults to `1.0`):
            Share of training visits whose clues are the reference labels instead of the model's own
            decisions; it teaches the LLM to write what its clues say.
        calibrate_clue_thresholds (`bool`, *optional*, defaults to `True`):
            Before training, tune each disease's clue threshold for F1 on the training split, calling at most
            1.5x as many positives as there are. Needs the frozen perception.

        > Parameters that control the loss

        consistency_loss_weight (`float` or `None`, *optional*):
            Override lambda, the weight of the consistency loss (`0` disables it). If `None`, the model's.
        finding_token_weight (`float`, *optional*, defaults to `4.0`):
            LM-loss weight of the tokens of report sentences that state a finding; `1` is the plain token mean.

        > Parameters that control the data

        oversample_rare_findings (`bool`, *optional*, defaults to `True`):
            Draw training studies with a rare finding more often: weight ``max(1, 0.1 / prevalence)`` of the
            study's rarest finding.
        single_view_rate (`float`, *optional*, defaults to `0.5`):
            Share of the training visits of a multi-view study that show only its first (frontal) view, so the
            model also reads one-view studies (docs/single_view). `0` always shows every view. Evaluation
            batches always show every view.
        cache_vision_features (`bool`, *optional*, defaults to `True`):
            Compute the frozen encoder's features once per study and reuse them every epoch. Off by itself
            when the encoder trains.

        > Parameters that control generation-based evaluation

        generation_max_new_tokens (`int`, *optional*, defaults to `96`):
            Report length limit, in new tokens.
        generation_num_beams (`int`, *optional*, defaults to `1`):
            Number of beams (`1`: greedy decoding).

        > Parameters that override `TrainingArguments` defaults

        remove_unused_columns (`bool`, *optional*, defaults to `False`):
            Kept `False`: the collators read the study columns.
        report_to (`str` or `list[str]`, *optional*, defaults to `["none"]`):
            Logging integrations, e.g. `tensorboard wandb`, or `"all"`. The default logs nowhere (offline).
        metric_for_best_model (`str` or `None`, *optional*, defaults to `"ce_macro_f1_14"`):
            The generation metric that picks the best checkpoint (with ``load_best_model_at_end``).
        greater_is_better (`bool` or `None`, *optional*, defaults to `True`):
            Whether a larger ``metric_for_best_model`` is better.
    """

    # Parameters that control the model
    model: str = field(
        default=None, metadata={"help": "a stage-2 folder (trrg bridge / trrg init) to fine-tune"}
    )
    pretrain_model: str | None = field(
        default=None, metadata={"help": "instead of --model: a stage-1 folder, bridged to --llm"}
    )
    llm: str | None = field(
        default=None,
        metadata={"help": "with --pretrain_model: causal LM path / hub id (default: the preset's)"},
    )
    preset: str = field(
        default="tiny",
        metadata={
            "help": "with --pretrain_model: preset for the LLM and clue sizes (also picks the training recipe)",
            "choices": list(PRESETS),
        },
    )
    freeze_vision: bool = field(
        default=True, metadata={"help": "keep the stage-1 vision encoder and zero-shot head frozen"}
    )
    adapt_perception: bool = field(
        default=False,
        metadata={"help": "train only the zero-shot perception on the data's report labels (its prompt loss), the "
                  "writer frozen; thresholds re-tuned after (a new site)"},
    )
    adapted_perception_weight: float = field(
        default=1.0,
        metadata={"help": "with --adapt_perception: keep this share of the adapted perception weights, the rest "
                  "from the weights before (1.0: the adapted ones; the adapt recipe: 0.5)"},
    )

    # Parameters that control LoRA
    lora_r: int = field(
        default=0,
        metadata={"help": "LoRA rank on the LLM (0: train the LLM fully, sensible only for tiny LLMs)"},
    )
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_target_modules: str = field(
        default="auto",
        metadata={"help": "comma-separated LLM module names for LoRA ('auto': what fits the LLM's architecture)"},
    )
    lora_vision: bool = field(
        default=False,
        metadata={"help": "also put LoRA on the vision encoder's linear layers (its features are then not cached)"},
    )

    # Parameters that control the clues
    use_clue_injection: bool | None = field(
        default=None,
        metadata={"help": "override the model's clue injection switch (ablation; only when bridging)"},
    )
    use_clue_interaction: bool | None = field(
        default=None,
        metadata={"help": "override the model's clue interaction switch (ablation; only when bridging)"},
    )
    reference_clue_rate: float = field(
        default=1.0,
        metadata={
            "help": "share of training visits whose clues are the reference labels instead of the model's own "
            "decisions (teaches the LLM to write what its clues say)"
        },
    )
    calibrate_clue_thresholds: bool = field(
        default=True,
        metadata={
            "help": "before training, tune each disease's clue threshold for F1 on the training split (calling "
            "at most 1.5x as many positives as there are); needs the frozen perception"
        },
    )

    # Parameters that control the loss
    consistency_loss_weight: float | None = field(
        default=None, metadata={"help": "override lambda of the consistency loss (0 disables)"}
    )
    finding_token_weight: float = field(
        default=4.0,
        metadata={
            "help": "LM-loss weight of the tokens of report sentences that state a finding (1: plain token mean)"
        },
    )

    # Parameters that control the data
    oversample_rare_findings: bool = field(
        default=True,
        metadata={
            "help": "draw training studies with a rare finding more often (weight max(1, 0.1 / prevalence) of "
            "the study's rarest finding)"
        },
    )
    single_view_rate: float = field(
        default=0.5,
        metadata={"help": "share of training visits of a multi-view study shown with its first (frontal) view only"},
    )
    cache_vision_features: bool = field(
        default=True,
        metadata={
            "help": "compute the frozen encoder's features once per study and reuse them every epoch (off when "
            "the encoder trains)"
        },
    )

    # Parameters that control generation-based evaluation
    generation_max_new_tokens: int = field(
        default=96, metadata={"help": "report length limit in generation-based evaluation"}
    )
    generation_num_beams: int = field(default=1, metadata={"help": "beams in generation-based evaluation"})

    # Parameters that override `TrainingArguments` defaults
    remove_unused_columns: bool = field(default=False, metadata={"help": REMOVE_UNUSED_COLUMNS_HELP})
    report_to: str | list[str] = field(default_factory=_no_reporting, metadata={"help": REPORT_TO_HELP})
    metric_for_best_model: str | None = field(
        default="ce_macro_f1_14", metadata={"help": "best checkpoint by this generation metric"}
    )
    greater_is_better: bool | None = field(default=True, metadata={"help": "for metric_for_best_model"})

    def __post_init__(self):
        super().__post_init__()
        _pin_memory_only_with_an_accelerator(self)

    @classmethod
    def from_recipe(cls, preset: str = "tiny", stage: str = "finetune", **options) -> "TRRGFinetuneArguments":
        """What ``trrg finetune`` trains with: the preset's recipe for ``stage`` ("finetune", or "continue" for
        a model that was already fine-tuned; ``trrg.assembly.presets.RECIPES``), then ``options``."""
        return cls(**{"preset": preset, **recipe_options(preset, stage), **options})
