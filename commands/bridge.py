"""``trrg bridge``: a stage-2 model from a stage-1 folder plus an LLM (``trrg.assembly.bridge``).

    trrg bridge --pretrain_model runs/pretrain/final --out runs/bridged                      # tiny LLM from config
    trrg bridge --pretrain_model runs/pretrain/final --llm /models/llama-7b --out runs/bridged  # a real LLM
"""

from __future__ import annotations

import argparse

from trrg.assembly.bridge import bridge
from trrg.assembly.hub_folders import save_hub_folder
from trrg.assembly.presets import PRESETS
from trrg.commands.parsing import new_output_folder


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trrg bridge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain_model", required=True, help="stage-1 folder (trrg pretrain's final/ or a checkpoint)")
    parser.add_argument("--llm", help="causal LM path or hub id (default: the preset's, built from config)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="preset for the LLM and clue-module sizes")
    parser.add_argument("--out", required=True, help="folder to write the stage-2 model to")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = new_output_folder(args.out, "trrg bridge")
    model, processor = bridge(args.pretrain_model, args.llm, args.preset, seed=args.seed)
    save_hub_folder(model, processor, out)
    print(f"stage-2 model written to {out} (prompt bank from {args.pretrain_model})")
    return 0
