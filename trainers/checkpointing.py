"""Resuming runs from their newest complete checkpoint, and keeping a run's log history."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)


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
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    numbered = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and p.is_dir())
    for _, checkpoint in reversed(numbered):
        if (checkpoint / "trainer_state.json").is_file():
            return str(checkpoint)
        logger.warning("skipping incomplete checkpoint %s (no trainer_state.json)", checkpoint)
    return None


def save_log_history(trainer, output_dir: str | Path) -> None:
    """The run's logged losses and metrics, as JSON beside its checkpoints."""
    if trainer.is_world_process_zero():
        path = Path(output_dir) / "log_history.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(trainer.state.log_history, indent=1), encoding="utf-8")
