"""``trrg init``: write a hub-ready, randomly initialised TRRG folder (model + processor + remote code).

    trrg init --preset tiny --out models/trrg-tiny                        # stage 2, all from config
    trrg init --preset tiny --stage pretrain --out models/trrg-tiny-s1    # stage 1 (contrastive)
    trrg init --preset base --vision /models/swin-b --llm /models/llama-7b --out models/trrg-base

With ``--vision/--text/--llm`` pointing at real models, their pretrained weights are loaded into the
backbones; everything TRRG adds (projections, clue modules) starts random.
"""

from __future__ import annotations

import argparse

from trrg.assembly.build import build_finetune_model, build_pretrain_model
from trrg.assembly.hub_folders import save_hub_folder
from trrg.assembly.presets import PRESETS
from trrg.commands.parsing import new_output_folder


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trrg init", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="model size preset (default: tiny)")
    parser.add_argument("--stage", choices=["pretrain", "finetune"], default="finetune",
                        help="pretrain: the stage-1 contrastive model; finetune (default): the stage-2 report model")
    parser.add_argument("--out", required=True, help="folder to write (must be empty or absent)")
    parser.add_argument("--vision", help="vision backbone path or hub id (overrides the preset)")
    parser.add_argument("--text", help="stage-1 text encoder path or hub id (overrides the preset)")
    parser.add_argument("--llm", help="causal LM path or hub id (overrides the preset)")
    parser.add_argument("--vocab-size", type=int, default=1024, help="size of the tokenizer trained for config-built presets")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = new_output_folder(args.out, "trrg init")
    if args.stage == "pretrain":
        model, processor = build_pretrain_model(args.preset, args.vision, args.text, args.vocab_size, seed=args.seed)
    else:
        model, processor = build_finetune_model(args.preset, args.vision, args.llm, vocab_size=args.vocab_size,
                                                seed=args.seed)
    save_hub_folder(model, processor, out)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {type(model).__name__} ({params / 1e6:.2f} M parameters) and its processor to {out}")
    return 0
