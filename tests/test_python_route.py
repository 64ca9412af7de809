"""The Python route is the CLI route: a trainer built the README's way (``TRRG*Arguments`` +
``TRRG*Trainer(model=, args=, train_dataset=, processing_class=)``) and one built by ``trrg
finetune``/``trrg pretrain`` with the same values give the same first batch, clue thresholds, sampling
weights, trainable parameters and first-step loss, for every argument the stage's class documents."""

import copy
from dataclasses import fields

import pytest
import torch
from transformers import TrainingArguments

from trrg.assembly.hub_folders import load_model_folder, save_hub_folder
from trrg.commands.parsing import parse_with_resume, recipe_argv
from trrg.processing.studies import load_studies
from trrg.trainers.arguments import TRRGDataArguments, TRRGFinetuneArguments, TRRGPretrainArguments
from trrg.trainers.finetune_trainer import TRRGFinetuneTrainer, build_finetuner
from trrg.trainers.pretrain_trainer import TRRGPretrainer, build_pretrainer

pytestmark = pytest.mark.slow

RUN = {"max_steps": 1, "logging_steps": 1, "save_strategy": "no", "use_cpu": True, "disable_tqdm": True,
       "per_device_train_batch_size": 8, "eval_strategy": "no", "dataloader_num_workers": 0}
# Arguments that say which model to load: the Python route loads its model itself.
MODEL_LOADING = {"model", "pretrain_model", "llm", "preset", "vision", "text", "use_clue_injection", "use_clue_interaction"}
# Each stage's documented arguments, at values other than their defaults (two settings for stage 2:
# the frozen perception, whose features are cached and whose thresholds are tuned, and a trained one).
FINETUNE_SETTINGS = [
    {"freeze_vision": True, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lora_target_modules": "q_proj,v_proj",
     "reference_clue_rate": 0.5, "calibrate_clue_thresholds": True, "consistency_loss_weight": 0.3,
     "finding_token_weight": 2.0, "oversample_rare_findings": True, "single_view_rate": 0.25,
     "cache_vision_features": True, "generation_max_new_tokens": 12, "generation_num_beams": 2,
     "remove_unused_columns": True, "report_to": ["none"], "metric_for_best_model": "bleu_4", "greater_is_better": True},
    {"freeze_vision": False, "lora_r": 0, "reference_clue_rate": 0.0, "calibrate_clue_thresholds": False,
     "finding_token_weight": 1.0, "oversample_rare_findings": False, "single_view_rate": 0.0,
     "cache_vision_features": False, "greater_is_better": False},
    {"adapt_perception": True, "calibrate_clue_thresholds": True, "cache_vision_features": False,
     "adapted_perception_weight": 0.25},
]
# lora_vision needs a ViT (the tiny preset's encoder is a ResNet): tests/test_real_backbones.py checks it
# through prepare_for_training, the one place both routes apply it.
FINETUNE_ELSEWHERE = {"lora_vision"}
PRETRAIN_SETTINGS = [{"positive_sentence_rate": 0.4, "augment": True, "single_view_rate": 0.25,
                      "prompt_pos_weight_power": 1.0, "remove_unused_columns": True, "report_to": ["none"]}]
DATA = {"uncertain": "negative"}


def documented(arguments_class) -> set[str]:
    """The fields the class declares or overrides (not TrainingArguments' own, unchanged ones)."""
    inherited = {f.name: (f.default, f.default_factory) for f in fields(TrainingArguments)}
    return {f.name for f in fields(arguments_class) if inherited.get(f.name) != (f.default, f.default_factory)}


def test_every_documented_argument_is_covered():
    for arguments_class, settings, elsewhere in ((TRRGFinetuneArguments, FINETUNE_SETTINGS, FINETUNE_ELSEWHERE),
                                                 (TRRGPretrainArguments, PRETRAIN_SETTINGS, set())):
        covered = {name for setting in settings for name in setting} | MODEL_LOADING | elsewhere
        assert documented(arguments_class) <= covered, documented(arguments_class) - covered


def _cli_argv(settings: dict, data, out) -> list[str]:
    argv = ["--data", str(data), "--output_dir", str(out), "--eval_split", ""]
    for key, value in {**RUN, **settings, **DATA}.items():
        argv += [f"--{key}", *(value if isinstance(value, list) else [str(value)])]
    return argv


def _observed(trainer) -> dict:
    """What the run is made of: first batch, thresholds, sampling weights, trainable parameters, first loss."""
    if hasattr(trainer, "prepare_perception"):
        trainer.prepare_perception()
    model = trainer.model
    batch = next(iter(trainer.get_train_dataloader()))
    trainable = sorted(name for name, parameter in model.named_parameters() if parameter.requires_grad)
    config = model.config
    observed = {"batch": batch, "trainable": trainable,
                "thresholds": list(getattr(getattr(config, "clue_config", None), "clue_thresholds", None) or []),
                "consistency_weight": getattr(getattr(config, "clue_config", None), "consistency_loss_weight", None),
                "sampling_weights": getattr(trainer, "sampling_weights", None),
                "generation": getattr(trainer, "generation_kwargs", None),
                "pos_weight": model.disease_pos_weight.clone(), "cached": getattr(trainer, "vision_cache", None) is not None,
                "remove_unused_columns": trainer.args.remove_unused_columns}
    trainer.train()
    observed["loss"] = trainer.state.log_history[0]["loss"]
    observed["perception_after"] = [p.detach().clone() for p in trainer.accelerator.unwrap_model(model).perception.parameters()]
    return observed


def _assert_same(cli: dict, python: dict) -> None:
    assert cli.keys() == python.keys()
    for key in cli:
        a, b = cli[key], python[key]
        if key == "batch":
            assert a.keys() == b.keys()
            for name in a:
                if torch.is_tensor(a[name]):
                    assert torch.equal(a[name], b[name]), name
        elif torch.is_tensor(a) or torch.is_tensor(b):
            assert torch.equal(a, b), key
        elif key == "perception_after":
            assert all(torch.equal(x, y) for x, y in zip(a, b)), key
        else:
            assert a == b, key


@pytest.mark.parametrize("setting", range(len(FINETUNE_SETTINGS)))
def test_finetune_python_route_trains_what_the_cli_trains(setting, tiny_finetune_model, tiny_phantom, tmp_path):
    settings = FINETUNE_SETTINGS[setting]
    folder = save_hub_folder(*tiny_finetune_model, tmp_path / "model")
    argv = recipe_argv(["--model", str(folder), *_cli_argv(settings, tiny_phantom, tmp_path / "cli")], stage="finetune")
    args, data_args = parse_with_resume((TRRGFinetuneArguments, TRRGDataArguments), argv, "trrg finetune")
    cli = _observed(build_finetuner(args, data_args)[0])

    model, processor = load_model_folder(folder, expected="trrg")
    python_args = TRRGFinetuneArguments.from_recipe("tiny", output_dir=str(tmp_path / "python"),
                                                    **{**RUN, **settings})
    python = _observed(TRRGFinetuneTrainer(model=model, args=python_args, train_dataset=load_studies(tiny_phantom)["train"],
                                           processing_class=processor, data_args=TRRGDataArguments(**DATA)))
    assert cli["cached"] == settings["cache_vision_features"] and cli["batch"].get("vision_features") is None
    assert cli["generation"] == {"max_new_tokens": args.generation_max_new_tokens,
                                 "num_beams": args.generation_num_beams}
    if settings.get("adapt_perception"):  # only the perception trains; its thresholds are tuned after training
        assert cli["trainable"] and all(name.startswith("perception.") for name in cli["trainable"])
    elif settings["calibrate_clue_thresholds"]:
        assert cli["thresholds"]  # tuned (the saved model has none)
    _assert_same(cli, python)


def test_pretrain_python_route_trains_what_the_cli_trains(tiny_pretrain_model, tiny_phantom, tmp_path):
    settings = PRETRAIN_SETTINGS[0]
    folder = save_hub_folder(*tiny_pretrain_model, tmp_path / "model")
    argv = recipe_argv(["--model", str(folder), *_cli_argv(settings, tiny_phantom, tmp_path / "cli")], stage="pretrain")
    args, data_args = parse_with_resume((TRRGPretrainArguments, TRRGDataArguments), argv, "trrg pretrain")
    cli = _observed(build_pretrainer(args, data_args)[0])

    model, processor = load_model_folder(folder, expected="trrg_contrastive")
    python_args = TRRGPretrainArguments.from_recipe("tiny", output_dir=str(tmp_path / "python"),
                                                    **{**RUN, **settings})
    python = _observed(TRRGPretrainer(model=copy.deepcopy(model), args=python_args,
                                      train_dataset=load_studies(tiny_phantom)["train"], processing_class=processor,
                                      data_args=TRRGDataArguments(**DATA)))
    assert not torch.equal(cli["pos_weight"], torch.ones_like(cli["pos_weight"]))  # weighted from the labels
    _assert_same(cli, python)
