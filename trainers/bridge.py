"""The stage bridge, ``trrg bridge``: a stage-2 model from a stage-1 checkpoint plus an LLM.

    trrg bridge --stage1 runs/stage1/final --out runs/stage2-init                 # tiny LLM from config
    trrg bridge --stage1 runs/stage1/final --llm /models/llama-7b --out runs/s2   # a real LLM

Copied from stage 1: the vision backbone, the projection into the joint space and the temperature
(the zero-shot clue head), the positive weights. Computed: the prompt bank, the stage-1 text
embeddings of each disease's positive and negated prompt, stored as a buffer so stage 2 needs no
text encoder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from trrg.trainers.checkpoints import load_model_folder


@torch.no_grad()
def encode_prompt_bank(stage1_model, stage1_processor) -> torch.Tensor:
    """(diseases, 2, dim) prompt embeddings in the stage-1 model's disease order."""
    config = stage1_model.config
    prompts = stage1_processor.encode_disease_prompts(config.disease_prompts, config.disease_names)
    was_training = stage1_model.training
    bank = stage1_model.eval().encode_prompt_bank(**prompts)
    stage1_model.train(was_training)
    return bank


def bridge(stage1_dir: str | Path, llm: str | None = None, preset: str = "tiny", clue: dict | None = None,
           seed: int = 0, stage1=None):
    """Stage-2 model + processor initialised from a stage-1 folder (or an in-memory (model, processor))."""
    from trrg.trainers.init_model import build_generator

    if llm is not None:
        from trrg.trainers.presets import check_pretrained_source

        llm = check_pretrained_source(llm, "llm")
    stage1_model, stage1_processor = stage1 or load_model_folder(stage1_dir, expected="trrg_contrastive")
    tokenizer = None if llm else stage1_processor.tokenizer  # tiny: one tokenizer trained on reports
    model, processor = build_generator(preset, llm=llm, tokenizer=tokenizer, clue=clue, seed=seed,
                                       vision_config=stage1_model.config.vision_config,
                                       image_size=stage1_model.config.image_size,
                                       projection_dim=stage1_model.config.projection_dim)
    _copy_stage1(stage1_model, model, encode_prompt_bank(stage1_model, stage1_processor))
    return model, processor


@torch.no_grad()
def _copy_stage1(stage1_model, model, prompt_bank: torch.Tensor) -> None:
    if list(stage1_model.config.disease_names) != list(model.config.disease_names):
        raise ValueError("stage-1 and stage-2 disease vocabularies differ: pass the same disease_names to both")
    model.vision_model.load_state_dict(stage1_model.vision_model.state_dict())
    model.visual_projection.load_state_dict(stage1_model.visual_projection.state_dict())
    model.logit_scale.copy_(stage1_model.logit_scale)
    model.disease_pos_weight.copy_(stage1_model.disease_pos_weight)
    model.prompt_bank.copy_(prompt_bank)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trrg bridge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage1", required=True, help="stage-1 folder (trrg pretrain's final/ or a checkpoint)")
    parser.add_argument("--llm", help="causal LM path or hub id (default: the preset's, built from config)")
    parser.add_argument("--preset", default="tiny", help="preset for the LLM and clue-module sizes")
    parser.add_argument("--out", required=True, help="folder to write the stage-2 model to")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"trrg bridge: {out} is not empty; choose a new --out folder (nothing was overwritten)")
    from trrg.trainers.presets import save_hub_folder

    model, processor = bridge(args.stage1, args.llm, args.preset, seed=args.seed)
    save_hub_folder(model, processor, out)
    print(f"stage-2 model written to {out} (prompt bank from {args.stage1})")
    return 0
