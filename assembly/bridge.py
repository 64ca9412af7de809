"""The stage bridge: a finetune-stage (stage 2) model from a pretrained stage-1 model plus an LLM.

Copied from stage 1: its perception (``TRRGPerception``: the vision encoder, the projections into the
joint space, the temperature, the positive weights) and the pooling sharpness it was trained with.
Computed: the prompt bank, the stage-1 text embeddings of each disease's positive and negated prompt,
stored as a buffer so stage 2 needs no text encoder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trrg.assembly.build import build_finetune_model
from trrg.assembly.hub_folders import load_model_folder
from trrg.assembly.presets import check_pretrained_source


@torch.no_grad()
def encode_prompt_bank(pretrain_model, pretrain_processor) -> torch.Tensor:
    """(diseases, 2, dim) prompt embeddings in the pretrained model's disease order."""
    config = pretrain_model.config
    prompts = pretrain_processor.encode_disease_prompts(config.disease_prompts, config.disease_names)
    was_training = pretrain_model.training
    bank = pretrain_model.eval().encode_prompt_bank(**prompts)
    pretrain_model.train(was_training)
    return bank


def bridge(pretrain_dir: str | Path | None, llm: str | None = None, preset: str = "tiny", clue: dict | None = None,
           seed: int = 0, pretrained=None):
    """Stage-2 model + processor initialised from a stage-1 folder, or from an in-memory
    ``pretrained=(model, processor)``."""
    if llm is not None:
        llm = check_pretrained_source(llm, "llm")
    pretrain_model, pretrain_processor = pretrained or load_model_folder(pretrain_dir, expected="trrg_contrastive")
    tokenizer = None if llm else pretrain_processor.tokenizer  # tiny: one tokenizer trained on reports
    model, processor = build_finetune_model(preset, llm=llm, tokenizer=tokenizer, clue=clue, seed=seed,
                                            vision_config=pretrain_model.config.vision_config,
                                            image_size=pretrain_model.config.image_size,
                                            projection_dim=pretrain_model.config.projection_dim)
    _copy_perception(pretrain_model, model, encode_prompt_bank(pretrain_model, pretrain_processor))
    return model, processor


@torch.no_grad()
def _copy_perception(pretrain_model, model, prompt_bank: torch.Tensor) -> None:
    if list(pretrain_model.config.disease_names) != list(model.config.disease_names):
        raise ValueError("stage-1 and stage-2 disease vocabularies differ: pass the same disease_names to both")
    layout = pretrain_model.perception.distribution_layout
    if layout["sizes"]:  # stage 1's training-distribution statistics come along (sized by its config)
        model.perception.reset_training_distribution(layout["layers"], layout["sizes"])
        model.config.training_distribution = dict(layout)
    model.perception.load_state_dict(pretrain_model.perception.state_dict())
    model.config.local_pool_sharpness = pretrain_model.config.local_pool_sharpness
    model.prompt_bank.copy_(prompt_bank)
