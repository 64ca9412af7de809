"""Loading TRRG folders by kind with clear errors, and resuming runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KINDS = {"trrg": "a stage-2 (report generation) folder", "trrg_contrastive": "a stage-1 (contrastive) folder"}


def model_kind(folder: str | Path) -> str:
    config = Path(folder) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"{folder} has no config.json: pass a folder written by `trrg init`, `trrg pretrain` or `trrg finetune` "
            "(a run's final/ or checkpoint-N/ folder)"
        )
    return json.loads(config.read_text()).get("model_type", "unknown")


def load_model_folder(folder: str | Path, expected: str):
    """Model + processor of a TRRG folder, checking it is the expected stage."""
    from trrg.modeling import register_auto_classes
    from transformers import AutoModel, AutoProcessor

    register_auto_classes()
    kind = model_kind(folder)
    if kind != expected:
        found = KINDS.get(kind, f"a {kind!r} model")
        raise ValueError(f"{folder} is {found}, but {KINDS[expected]} is needed here: check the path "
                         "(stage 1 comes from `trrg pretrain`, stage 2 from `trrg bridge`/`trrg finetune`)")
    return AutoModel.from_pretrained(folder), AutoProcessor.from_pretrained(folder)


def resume_point(args) -> str | bool | None:
    """``--resume_from_checkpoint``: a path, or True/"last" for the newest checkpoint of output_dir."""
    value = args.resume_from_checkpoint
    if value in (None, "", False):
        return None
    if str(value).lower() in {"true", "last", "1"}:
        last = last_complete_checkpoint(args.output_dir)
        if last is None:
            print(f"no checkpoint in {args.output_dir} yet: starting from the beginning")
        return last
    if not Path(value).is_dir():
        raise SystemExit(f"--resume_from_checkpoint {value}: no such checkpoint folder")
    return value


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """Newest ``checkpoint-N`` holding trainer_state.json, which the Trainer writes last: a run
    killed while writing a checkpoint leaves it incomplete, and resuming skips it."""
    import logging
    import re

    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    numbered = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and p.is_dir())
    for _, checkpoint in reversed(numbered):
        if (checkpoint / "trainer_state.json").is_file():
            return str(checkpoint)
        logging.getLogger(__name__).warning("skipping incomplete checkpoint %s (no trainer_state.json)", checkpoint)
    return None


def save_log_history(trainer, output_dir: str | Path) -> None:
    """The run's logged losses and metrics, as JSON beside its checkpoints."""
    import json as _json

    if trainer.is_world_process_zero():
        path = Path(output_dir) / "log_history.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_json.dumps(trainer.state.log_history, indent=1), encoding="utf-8")


def parse_with_resume(dataclass_types, argv, prog: str, description: str | None = None):
    """HfArgumentParser plus ``--resume`` (= --resume_from_checkpoint last)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = ["--resume_from_checkpoint" if a == "--resume" else a for a in argv]
    if "--resume_from_checkpoint" in argv:
        index = argv.index("--resume_from_checkpoint")
        if index + 1 == len(argv) or argv[index + 1].startswith("--"):
            argv.insert(index + 1, "last")
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_types, prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser.parse_args_into_dataclasses(args=argv)
