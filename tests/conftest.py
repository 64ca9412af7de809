"""Shared fixtures. Every test runs offline: nothing may be downloaded."""

from __future__ import annotations

import os

# Set before transformers / datasets / evaluate are imported anywhere in the test session.
for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_name] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory, monkeypatch):
    """Remote-code modules and caches go to a temporary folder, never the user's ~/.cache."""
    home = tmp_path_factory.getbasetemp() / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_MODULES_CACHE", str(home / "modules"))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from trrg.assembly.report_tokenizer import phantom_report_corpus, train_report_tokenizer

    return train_report_tokenizer(phantom_report_corpus(300, seed=0), vocab_size=600)


@pytest.fixture(scope="session")
def tiny_finetune_model(tiny_tokenizer):
    """A randomly initialised tiny stage-2 model and its processor (eval mode)."""
    from trrg.assembly.build import build_finetune_model

    model, processor = build_finetune_model("tiny", tokenizer=tiny_tokenizer, seed=0)
    torch.manual_seed(1)
    with torch.no_grad():  # a non-trivial prompt bank, so clues differ between diseases
        model.prompt_bank.copy_(torch.nn.functional.normalize(torch.randn_like(model.prompt_bank), dim=-1))
    return model.eval(), processor


@pytest.fixture(scope="session")
def tiny_pretrain_model(tiny_tokenizer):
    from trrg.assembly.build import build_processor, pretrain_config
    from trrg.assembly.presets import PRESETS
    from trrg.modeling.modeling_trrg import TRRGContrastiveModel

    config = pretrain_config(PRESETS["tiny"], tiny_tokenizer)
    torch.manual_seed(0)
    return TRRGContrastiveModel(config).eval(), build_processor(tiny_tokenizer, config)


def xray_like(seed: int, height: int = 96, width: int = 80) -> np.ndarray:
    """A small random grayscale image (uint8)."""
    return (np.random.default_rng(seed).random((height, width)) * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory):
    """A small phantom data set on disk (R2Gen layout): 48 train, 8 val, 8 test studies, 64 px."""
    from trrg.processing.phantom import generate_phantom

    folder = tmp_path_factory.mktemp("phantom") / "data"
    generate_phantom(folder, num_train=48, num_val=8, num_test=8, image_size=64, seed=0)
    return folder
