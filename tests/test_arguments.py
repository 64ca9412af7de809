"""The training argument dataclasses as the CLIs parse them (HfArgumentParser): defaults, choices, help
strings, the documented Parameters, and no pinned memory without an accelerator."""

import dataclasses
import inspect
import re
import warnings

import pytest
import torch
from transformers import HfArgumentParser, Trainer
from transformers.integrations import get_reporting_integration_callbacks
from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

from trrg.assembly.presets import PRESETS
from trrg.trainers.arguments import TRRGDataArguments, TRRGFinetuneArguments, TRRGPretrainArguments
from trrg.commands.parsing import parse_with_resume

STAGES = [TRRGPretrainArguments, TRRGFinetuneArguments]


def _parse(arguments_class, tmp_path, *extra):
    argv = ["--data", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out"), "--use_cpu", "True", *extra]
    # The path `trrg pretrain` / `trrg finetune` take.
    args, data_args = parse_with_resume((arguments_class, TRRGDataArguments), argv, "test")
    return args


@pytest.mark.parametrize("arguments_class", STAGES, ids=lambda cls: cls.__name__)
def test_report_to_defaults_to_none_and_a_trainer_starts(arguments_class, tmp_path):
    args = _parse(arguments_class, tmp_path)
    # TrainingArguments turns "none" / ["none"] into []; a mangled default would be [None].
    assert args.report_to == []
    assert get_reporting_integration_callbacks(args.report_to) == []
    trainer = Trainer(model=torch.nn.Linear(2, 2), args=args)
    reporters = set(INTEGRATION_TO_CALLBACK.values())
    assert not reporters & {type(callback) for callback in trainer.callback_handler.callbacks}


@pytest.mark.parametrize("arguments_class", STAGES, ids=lambda cls: cls.__name__)
def test_report_to_takes_one_or_several_integrations(arguments_class, tmp_path):
    assert _parse(arguments_class, tmp_path, "--report_to", "none").report_to == []
    assert _parse(arguments_class, tmp_path, "--report_to", "tensorboard").report_to == ["tensorboard"]
    assert _parse(arguments_class, tmp_path, "--report_to", "tensorboard", "wandb").report_to == ["tensorboard", "wandb"]


def test_python_construction_also_defaults_to_none(tmp_path):
    for arguments_class in STAGES:
        assert arguments_class(output_dir=str(tmp_path), use_cpu=True).report_to == []


@pytest.mark.parametrize("arguments_class", [*STAGES, TRRGDataArguments], ids=lambda cls: cls.__name__)
def test_parser_keeps_every_default_we_declare(arguments_class):
    """No field of ours reaches the dataclass with another value than its declared default."""
    parser = HfArgumentParser(arguments_class)
    namespace = parser.parse_args(["--output_dir", "out"] if arguments_class in STAGES else [])
    own = arguments_class.__dict__.get("__annotations__", {})
    mangled = {}
    for item in dataclasses.fields(arguments_class):
        if item.name not in own:
            continue  # inherited from transformers.TrainingArguments: transformers' business
        default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        if getattr(namespace, item.name) != default:
            mangled[item.name] = (default, getattr(namespace, item.name))
    assert not mangled, f"HfArgumentParser changes these defaults (declared, parsed): {mangled}"


# --- layout: choices, help strings, the documented Parameters ------------------------------------

ALL_CLASSES = [*STAGES, TRRGDataArguments]
DOCUMENTED_FIELD = re.compile(r"^ {8}(\w+) \(")


def _own_fields(arguments_class) -> list[str]:
    """The fields a class declares itself (new ones and TrainingArguments defaults it overrides), in
    the order of its body."""
    return list(inspect.get_annotations(arguments_class))


def _documented_fields(arguments_class) -> list[str]:
    parameters = arguments_class.__doc__.split("Parameters:", 1)[1]
    return [match.group(1) for line in parameters.splitlines() if (match := DOCUMENTED_FIELD.match(line))]


def _parse_error(capsys, arguments_class, tmp_path, *extra) -> str:
    with pytest.raises(SystemExit) as exit_info:
        _parse(arguments_class, tmp_path, *extra)
    assert exit_info.value.code == 2  # argparse's usage error, before anything is loaded
    return capsys.readouterr().err


@pytest.mark.parametrize("arguments_class", STAGES, ids=lambda cls: cls.__name__)
def test_a_wrong_uncertain_policy_fails_at_parse_time_naming_the_flag(arguments_class, tmp_path, capsys):
    error = _parse_error(capsys, arguments_class, tmp_path, "--uncertain", "maybe")
    assert "argument --uncertain: invalid choice: 'maybe'" in error
    assert "'positive'" in error and "'negative'" in error


@pytest.mark.parametrize("arguments_class", STAGES, ids=lambda cls: cls.__name__)
def test_every_uncertain_policy_parses(arguments_class, tmp_path):
    for policy in ("positive", "negative"):
        args, data_args = parse_with_resume((arguments_class, TRRGDataArguments),
                                            ["--data", "d", "--output_dir", str(tmp_path), "--uncertain", policy],
                                            "test")
        assert data_args.uncertain == policy


def test_a_wrong_preset_fails_at_parse_time_naming_the_flag(tmp_path, capsys):
    error = _parse_error(capsys, TRRGFinetuneArguments, tmp_path, "--pretrain_model", "p", "--preset", "huge")
    assert "argument --preset: invalid choice: 'huge'" in error
    assert all(f"'{name}'" in error for name in PRESETS)


def test_every_preset_parses(tmp_path):
    for name in PRESETS:
        assert _parse(TRRGFinetuneArguments, tmp_path, "--preset", name).preset == name


@pytest.mark.parametrize("arguments_class", ALL_CLASSES, ids=lambda cls: cls.__name__)
def test_every_field_has_a_help_string(arguments_class):
    by_name = {item.name: item for item in dataclasses.fields(arguments_class)}
    missing = [name for name in _own_fields(arguments_class) if not by_name[name].metadata.get("help", "").strip()]
    assert not missing, f"fields without a help string: {missing}"


@pytest.mark.parametrize("arguments_class", ALL_CLASSES, ids=lambda cls: cls.__name__)
def test_the_docstring_documents_every_field_in_the_order_of_the_body(arguments_class):
    """Fails when a field is added without a line under "Parameters:" (or documented but removed)."""
    own, documented = _own_fields(arguments_class), _documented_fields(arguments_class)
    assert sorted(set(own) - set(documented)) == [], "fields missing from the docstring's Parameters"
    assert sorted(set(documented) - set(own)) == [], "documented fields the class does not declare"
    assert documented == own, "the docstring and the body group the fields in different orders"


@pytest.mark.parametrize("arguments_class", ALL_CLASSES, ids=lambda cls: cls.__name__)
def test_the_docstring_groups_the_fields_like_the_body(arguments_class):
    """Each "> Parameters that ..." heading of the docstring is a "# Parameters that ..." comment of the body."""
    headings = re.findall(r"^ {8}> (Parameters that .+)$", arguments_class.__doc__, flags=re.MULTILINE)
    comments = re.findall(r"^ {4}# (Parameters that .+)$", inspect.getsource(arguments_class), flags=re.MULTILINE)
    assert headings and headings == comments


def test_no_line_of_the_arguments_module_exceeds_120_characters():
    import trrg.trainers.arguments as module

    long_lines = [number for number, line in enumerate(inspect.getsource(module).splitlines(), 1) if len(line) > 120]
    assert not long_lines, f"lines over 120 characters: {long_lines}"


# --- pinned memory only with an accelerator ------------------------------------------------------


@pytest.mark.skipif(torch.accelerator.is_available(), reason="checks a machine without an accelerator")
@pytest.mark.parametrize("arguments_class", STAGES, ids=lambda cls: cls.__name__)
def test_no_pinned_memory_without_an_accelerator(arguments_class, tmp_path):
    # Without --use_cpu: TrainingArguments itself turns pinning off only for use_cpu.
    args, _ = parse_with_resume((arguments_class, TRRGDataArguments), ["--output_dir", str(tmp_path)], "test")
    assert args.dataloader_pin_memory is False
    assert arguments_class(output_dir=str(tmp_path)).dataloader_pin_memory is False
    trainer = Trainer(model=torch.nn.Linear(2, 2), args=args, train_dataset=[{"x": torch.zeros(2)}] * 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        next(iter(trainer.get_train_dataloader()))
    assert not [str(w.message) for w in caught if "pin_memory" in str(w.message)]


@pytest.mark.parametrize("arguments_class", STAGES, ids=lambda cls: cls.__name__)
def test_pinned_memory_kept_with_an_accelerator(arguments_class, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    assert arguments_class(output_dir=str(tmp_path)).dataloader_pin_memory is True
    assert arguments_class(output_dir=str(tmp_path), dataloader_pin_memory=False).dataloader_pin_memory is False


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_help_opens_with_a_one_line_synopsis(command, capsys):
    from trrg.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    first, second = capsys.readouterr().out.splitlines()[:2]
    assert first.startswith(f"usage: trrg {command} ") and "--output_dir O" in first and len(first) <= 130
    assert second == ""  # the synopsis ends there: argparse's generated usage ran over 100 lines


def test_finetuning_an_already_fine_tuned_model_takes_the_continue_recipe(tiny_finetune_model, tmp_path, capsys):
    from trrg.assembly.hub_folders import save_hub_folder
    from trrg.assembly.presets import RECIPES
    from trrg.commands.parsing import recipe_argv

    model, processor = tiny_finetune_model
    bridged = save_hub_folder(model, processor, tmp_path / "bridged")  # never fine-tuned: no trrg_training_data
    capsys.readouterr()
    assert recipe_argv(["--model", str(bridged)], "finetune")[:2] == ["--learning_rate", "0.002"]
    assert "fine-tuned" not in capsys.readouterr().err
    model.config.trrg_training_data = "phantom"
    try:
        trained = save_hub_folder(model, processor, tmp_path / "trained")
    finally:
        del model.config.trrg_training_data  # the session fixture stays a bridged model
    argv = recipe_argv(["--model", str(trained), "--num_train_epochs", "2"], "finetune")
    continue_rate = RECIPES["tiny"]["continue"]["learning_rate"]
    assert argv[:2] == ["--learning_rate", str(continue_rate)] and continue_rate <= RECIPES["tiny"]["finetune"]["learning_rate"] / 10
    assert argv[-2:] == ["--num_train_epochs", "2"]  # the user's flags still come last and win
    stated = capsys.readouterr().err
    assert "already fine-tuned (on 'phantom')" in stated
    assert "2 epochs" in stated and "warm-up 10% of the steps" in stated  # what is applied, the user's flags included
    assert recipe_argv(["--model", "no-such/model-id"], "finetune")[:2] == ["--learning_rate", "0.002"]
    capsys.readouterr()
    adapt = RECIPES["tiny"]["adapt"]
    argv = recipe_argv(["--model", str(trained), "--adapt_perception", "true", "--replay_data", "orig",
                        "--adapted_perception_weight", "0.3"], "finetune")
    assert argv[:2] == ["--learning_rate", str(adapt["learning_rate"])]
    stated = capsys.readouterr().err
    assert '"adapt" recipe' in stated and "already fine-tuned" not in stated
    assert f"{adapt['num_train_epochs']} epochs" in stated and "0.3 x the adapted weights" in stated
    assert "as many original ones not replayed" in stated
    recipe_argv(["--model", str(trained), "--adapt_perception", "true", "--calibrate_clue_thresholds", "false"], "finetune")
    assert "clue thresholds kept." in capsys.readouterr().err
    recipe_argv(["--model", str(trained), "--calibrate_clue_thresholds", "true"], "finetune")  # continue, re-tuned
    assert "clue thresholds re-tuned." in capsys.readouterr().err


def test_finetune_evaluates_each_epoch_when_the_data_has_an_evaluation_split(tiny_phantom, tmp_path):
    from trrg.commands.parsing import EVALUATION_EACH_EPOCH, evaluation_argv

    argv = ["--data", str(tiny_phantom), "--output_dir", str(tmp_path)]
    added = evaluation_argv(argv)
    assert added[-len(argv):] == argv and added[:2] == ["--eval_strategy", "epoch"]
    assert len(added) == len(argv) + 2 * len(EVALUATION_EACH_EPOCH)
    assert evaluation_argv(argv + ["--eval_split", "validation"]) == argv + ["--eval_split", "validation"]  # no such split
    assert evaluation_argv(argv + ["--eval_strategy", "no"]) == argv + ["--eval_strategy", "no"]  # the user said
    assert evaluation_argv(argv + ["--eval_split", ""]) == argv + ["--eval_split", ""]  # "": no evaluation
    args, _ = parse_with_resume((TRRGFinetuneArguments, TRRGDataArguments), added + ["--use_cpu", "True"], "test")
    assert args.load_best_model_at_end and args.logging_steps == 0.05 and args.save_total_limit == 2


def test_the_demo_plans_pin_stage_one_batch_and_the_recipe_fills_the_rest(tmp_path):
    """`trrg pretrain` trains stage 1 at the tiny recipe's batch (32); the demo plans pin 64 (their time
    budget), and a plan that sets none (the benchmarks') gets the recipe's."""
    from trrg.assembly.presets import RECIPES
    from trrg.commands.demo import PLANS, DemoPlan, training_args
    from trrg.trainers.arguments import TRRGFinetuneArguments, TRRGPretrainArguments

    assert RECIPES["tiny"]["pretrain"]["per_device_train_batch_size"] == 32
    for name in ("full", "quick"):
        args = training_args(TRRGPretrainArguments, tmp_path / name, PLANS[name], "pretrain", 0)
        assert args.per_device_train_batch_size == 64 and args.num_train_epochs == PLANS[name].pretrain_epochs
    plain = DemoPlan(num_train=10, num_val=0, num_test=0, pretrain_epochs=2, finetune_epochs=1)
    assert training_args(TRRGPretrainArguments, tmp_path / "p", plain, "pretrain", 0).per_device_train_batch_size == 32
    finetune = training_args(TRRGFinetuneArguments, tmp_path / "f", PLANS["full"], "finetune", 0)
    assert finetune.per_device_train_batch_size == RECIPES["tiny"]["finetune"]["per_device_train_batch_size"]
