"""The training argument dataclasses as the CLIs parse them (HfArgumentParser), without any flag."""

import dataclasses

import pytest
import torch
from transformers import HfArgumentParser, Trainer
from transformers.integrations import get_reporting_integration_callbacks
from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

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
