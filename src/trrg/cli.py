"""The one console script, ``trrg``. Each sub-command is a module of ``trrg.commands`` (the folder
``commands/``) exposing ``main(argv: list[str]) -> int``; this file only dispatches, importing
lazily so ``trrg --help`` is instant."""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module of trrg.commands, one-line help)
    "demo": ("demo", "the main job: phantom -> stage 1 (pretrain) -> stage 2 (finetune) -> metrics + hub folder"),
    "init": ("init", "write a hub-ready, randomly initialised TRRG folder"),
    "pretrain": ("pretrain", "stage 1: contrastive pre-training (TRRGPretrainer)"),
    "bridge": ("bridge", "build a stage-2 model from a stage-1 folder and an LLM"),
    "finetune": ("finetune", "stage 2: report generation fine-tuning (TRRGFinetuneTrainer)"),
    "generate": ("generate", "write a report (and disease clues) for images"),
    # not "evaluate": a module is never named like a library (the `evaluate` package)
    "evaluate": ("evaluate_model", "generate on a split and score it"),
    "export": ("export", "merge LoRA and write a hub-ready folder"),
    "label": ("label", "label reports with the 14 CheXpert observations"),
    "prepare": ("prepare", "raw MIMIC-CXR-JPG, Open-i or DICOM data -> a study folder any --data reads"),
    "phantom": ("phantom", "generate the synthetic CXR phantom data set"),
    "score": ("score", "NLG + clinical-efficacy metrics for predictions vs references"),
    "space": ("space", "run the Gradio demo locally"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: trrg COMMAND [ARGS ...]   (trrg COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"trrg: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"trrg.commands.{COMMANDS[name][0]}")
    try:
        return int(module.main(rest) or 0)
    except (FileNotFoundError, ValueError) as error:
        # Bad input (a path, a file, an argument): say what and where, without a traceback.
        # TRRG_DEBUG=1 shows the traceback.
        if os.environ.get("TRRG_DEBUG"):
            raise
        print(f"trrg {name}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
