"""``trrg space``: serve the Gradio demo of ``trrg.space.app`` locally.

    trrg space --model runs/demo/model            # then open http://127.0.0.1:7860
    trrg space --model org/trrg --host 0.0.0.0    # a hub id from the local cache; exposed to the network
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from trrg.space.app import build_demo, launch, load_model, training_data_of


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trrg space", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("TRRG_MODEL"),
                        help="TRRG stage-2 folder or hub id (default: $TRRG_MODEL)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes the demo to the network)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)), help="default 7860")
    return parser


def check_model_source(model: str | None) -> str:
    """A local TRRG stage-2 folder or something shaped like a hub id ("org/name"); the error says
    which it is not and what to pass."""
    if not model:
        raise ValueError("pass --model DIR_OR_HUB_ID (or set TRRG_MODEL)")
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"--model {model}: the folder has no config.json; pass the folder written by "
                                    "`trrg finetune` (OUTPUT_DIR/final), `trrg export` or `trrg demo` (OUT/model)")
        return str(folder)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", model) and not model.startswith((".", "/", "~")):
        return model
    raise FileNotFoundError(f"--model {model}: no such folder (and not a hub id of the form org/name)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    model, processor = load_model(check_model_source(args.model))
    demo = build_demo(model, processor, training_data_of(model.config))
    launch(demo, args.host, args.port)
    return 0
