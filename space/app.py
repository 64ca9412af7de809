"""``trrg space``: the Gradio demo of a TRRG report generator (also the Hugging Face Space's app file).

    trrg space --model models/trrg-phantom                 # a local folder
    trrg space --model org/trrg-phantom --port 7861       # a hub id (downloaded or from the cache)
    TRRG_MODEL=org/trrg-phantom python app.py             # how the Hugging Face Space starts it

The demo is thin: the model is loaded once, and the served page hands its requests to a
``ReportBatcher``: one worker thread that generates the requests arriving together as one batch
through the model's report pipeline (its remote code's ``TRRGReportPipeline``, the one way from a study
to a report); a lone request streams its report token by token. The report is also listed sentence by
sentence: choosing one shows the evidence map of the observation it states.

The files, by concern: ``loading.py`` (the model, the banner, reading uploads), ``batching.py`` (the
``ReportBatcher`` and streaming), ``evidence.py`` (what the page shows of a perception: chart, clues, the
out-of-distribution note, sentences, overlays, the served-file cache), ``ui.py`` (the page), and this
one (the command line and ``launch``). They import only gradio, numpy, pandas, PIL, torch and
transformers (never ``trrg``): the model's own remote code (``trust_remote_code=True``) brings the image
loading, so the folder runs unchanged on a Space, where ``app.py`` is run from the folder itself.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import gradio as gr
import torch

if __package__:  # trrg.space, the package (`trrg space`)
    from . import batching, evidence, loading, ui
else:  # app.py run (or loaded by path) from its own folder: a Hugging Face Space
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import batching
    import evidence
    import loading
    import ui
load_model, training_data_of, build_demo = loading.load_model, loading.training_data_of, ui.build_demo

PARTS = (loading, batching, evidence, ui)  # the app's modules (benchmarks/space_load.py --set NAME=VALUE)
MAX_FILE_SIZE = "50mb"  # a large uncompressed DICOM plate is ~35 MB
SESSIONS_KEPT = 1000  # gradio forgets the oldest sessions beyond this (its default, 10000, is ~5 GB)


def launch(demo: gr.Blocks, host: str, port: int, **kwargs):
    """Serve the demo: no public share link, no extra readable folders, uploads capped in size, the
    per-session state bounded (``SESSIONS_KEPT``)."""
    kwargs.setdefault("state_session_capacity", SESSIONS_KEPT)
    return demo.launch(server_name=host, server_port=port, share=False, allowed_paths=None,
                       max_file_size=MAX_FILE_SIZE, **kwargs)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trrg space", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("TRRG_MODEL"),
                        help="TRRG stage-2 folder or hub id (default: $TRRG_MODEL)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes the demo to the network)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)), help="default 7860")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("TRRG_TORCH_THREADS", 0)) or default_threads(),
                        help="torch threads for the model (default $TRRG_TORCH_THREADS, else the CPU count minus "
                             "one: a core is left to the web server)")
    return parser


def default_threads() -> int:
    """Torch threads: all cores but one, which serves the page (uploads, images, streaming). On 2 shared
    cores one thread was also the faster: two threads that wait on each other stall when the other
    core is busy (benchmarks/space_load.py, README.md)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, cores - 1)


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
    torch.set_num_threads(max(1, args.threads))
    model, processor = load_model(check_model_source(args.model))
    demo = build_demo(model, processor, training_data_of(model.config))
    launch(demo, args.host, args.port)
    return 0


if __name__ == "__main__":  # a Hugging Face Space runs app.py itself (with TRRG_MODEL set)
    sys.exit(main())
