"""Command-line parsing shared by the training commands: the preset's recipe as defaults, and
``--resume``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trrg.assembly.presets import RECIPES, recipe_options


def recipe_argv(argv: list[str], stage: str) -> list[str]:
    """``argv`` with the preset's recipe for ``stage`` ("pretrain" or "finetune") in front, so that
    every flag the user gives wins (argparse keeps the last value). The preset is the one named by
    ``--preset`` or by ``--model`` (pretrain accepts a preset name there); ``tiny`` otherwise.
    ``trrg finetune --model M`` where M was already fine-tuned gets the "continue" recipe (said on stderr)."""
    preset = "tiny"
    for flag in ("--model", "--preset"):
        value = _flag_value(argv, flag)
        if value in RECIPES:
            preset = value
    if stage == "finetune" and _is_true(_flag_value(argv, "--adapt_perception")):
        stage = "adapt"
        _say_adapt_recipe(_applied(argv, preset, stage), preset, replay=_flag_value(argv, "--replay_data") is not None)
    elif stage == "finetune" and (trained_on := fine_tuned_on(_flag_value(argv, "--model"))) is not None:
        stage = "continue"
        applied = _applied(argv, preset, stage)
        print(f"--model was already fine-tuned (on {trained_on!r}): the {preset!r} preset's \"continue\" recipe fills "
              f"the options you leave out (a higher rate erases what the model learned); applied: {_schedule(applied)}, "
              "clue thresholds "
              f"{'re-tuned' if applied['calibrate_clue_thresholds'] else 'kept'}.",
              file=sys.stderr)
    recipe = []
    for key, value in recipe_options(preset, stage).items():
        recipe += [f"--{key}", str(value)]
    return recipe + list(argv)


def _is_true(value: str | None) -> bool:
    """A boolean flag's value as HfArgumentParser reads it (yes/no, true/false, t/f, y/n, 1/0)."""
    from transformers.hf_argparser import string_to_bool

    try:
        return value is not None and bool(string_to_bool(value))
    except Exception:  # the parser itself names a bad value
        return False


def _say_adapt_recipe(applied: dict, preset: str, replay: bool) -> None:
    """On stderr, the "adapt" recipe as applied (``applied``: ``_applied``'s options)."""
    weight = float(applied["adapted_perception_weight"])
    if not applied["calibrate_clue_thresholds"]:
        thresholds = "kept"
    elif replay:
        thresholds = "re-tuned after training on your training studies and as many original ones not replayed"
    else:
        thresholds = ("re-tuned after training on your training split (without --replay_data the model forgets "
                      "the original; docs/FINETUNE_ON_YOUR_DATA.md)")
    print(f"--adapt_perception: the {preset!r} preset's \"adapt\" recipe fills the options you leave out; applied: "
          f"{_schedule(applied)}, the perception kept as {weight:g} x the adapted weights + {1 - weight:g} x the "
          f"weights before, clue thresholds {thresholds}.", file=sys.stderr)


def _applied(argv: list[str], preset: str, stage: str) -> dict:
    """The recipe's options for ``stage`` with the values ``argv`` gives them instead."""
    recipe = {"calibrate_clue_thresholds": True, **recipe_options(preset, stage)}
    given = {key: value for key in recipe if (value := _flag_value(argv, f"--{key}")) is not None}
    if "calibrate_clue_thresholds" in given:
        given["calibrate_clue_thresholds"] = _is_true(given["calibrate_clue_thresholds"])
    return {**recipe, **given}


def _schedule(applied: dict) -> str:
    return (f"learning rate {float(applied['learning_rate']):g}, {applied['num_train_epochs']} epochs, warm-up "
            f"{_warmup(applied['warmup_steps'])}")


def _warmup(value) -> str:
    """``--warmup_steps``: a count, or below 1 a share of the training steps (TrainingArguments' rule)."""
    value = float(value)
    return f"{value:.0%} of the steps" if value < 1 else f"{value:g} steps"


# Stage 2 evaluates each epoch when the data has an evaluation split, logs the loss 20 times a run and
# ends on the best epoch (by --metric_for_best_model), unless the command line says otherwise.
EVALUATION_EACH_EPOCH = {"eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True,
                         "save_total_limit": 2, "logging_steps": 0.05}


def evaluation_argv(argv: list[str]) -> list[str]:
    """``EVALUATION_EACH_EPOCH`` in front of ``argv`` when ``--data`` has the ``--eval_split`` split and the
    command line sets none of those options; else ``argv``."""
    if any(_flag_value(argv, f"--{key}") is not None for key in EVALUATION_EACH_EPOCH) or not _flag_value(argv, "--data"):
        return argv
    from trrg.processing.studies import StudyDataError, load_studies

    try:
        splits = load_studies(_flag_value(argv, "--data"), image_root=_flag_value(argv, "--image_root"))
    except (StudyDataError, OSError, ValueError):
        return argv  # the command's own loading names what is wrong
    split = _flag_value(argv, "--eval_split")
    if (split if split is not None else "val") not in splits:  # --eval_split "": no evaluation
        return argv
    return [item for key, value in EVALUATION_EACH_EPOCH.items() for item in (f"--{key}", str(value))] + argv


def fine_tuned_on(model: str | None) -> str | None:
    """What a stage-2 model folder (or cached hub id) says it was fine-tuned on (``trrg_training_data``);
    ``None`` for a bridged or freshly initialised model, or when there is no readable config."""
    if not model:
        return None
    config = Path(model).expanduser() / "config.json"
    if not config.is_file():
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(model, "config.json")
        except ValueError:  # not a valid hub id either (HFValidationError): the command will say so
            return None
        if not isinstance(cached, str):
            return None
        config = Path(cached)
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return None  # the command's own loading reports what is wrong with the folder
    return data.get("trrg_training_data") if data.get("model_type") == "trrg" else None


def _flag_value(argv: list[str], flag: str) -> str | None:
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def parse_with_resume(dataclass_types, argv, prog: str, description: str | None = None, usage: str | None = None):
    """HfArgumentParser plus ``--resume`` (= --resume_from_checkpoint last). ``usage``: the one-line
    synopsis (argparse would list every TrainingArguments option, over a hundred, in it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = ["--resume_from_checkpoint" if a == "--resume" else a for a in argv]
    if "--resume_from_checkpoint" in argv:
        index = argv.index("--resume_from_checkpoint")
        if index + 1 == len(argv) or argv[index + 1].startswith("--"):
            argv.insert(index + 1, "last")
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_types, prog=prog, description=description, usage=usage,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser.parse_args_into_dataclasses(args=argv)


def new_output_folder(out: str | Path, prog: str) -> Path:
    """``--out`` as a Path, refused when it already holds files: nothing written before is overwritten."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{prog}: {out} is not empty; choose a new --out folder (nothing was overwritten)")
    return out
