"""Command-line parsing shared by the training commands: the preset's recipe as defaults, and
``--resume``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trrg.assembly.presets import RECIPES


def recipe_argv(argv: list[str], stage: str) -> list[str]:
    """``argv`` with the preset's recipe for ``stage`` ("pretrain" or "finetune") in front, so that
    every flag the user gives wins (argparse keeps the last value). The preset is the one named by
    ``--preset`` or by ``--model`` (pretrain accepts a preset name there); ``tiny`` otherwise."""
    preset = "tiny"
    for flag in ("--model", "--preset"):
        value = _flag_value(argv, flag)
        if value in RECIPES:
            preset = value
    recipe = []
    for key, value in RECIPES[preset][stage].items():
        recipe += [f"--{key}", str(value)]
    return recipe + list(argv)


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
