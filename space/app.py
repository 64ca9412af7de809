"""``trrg space``: the Gradio demo of a TRRG report generator (also the Hugging Face Space's app file).

    trrg space --model models/trrg-phantom                 # a local folder
    trrg space --model org/trrg-phantom --port 7861       # a hub id (downloaded or from the cache)
    TRRG_MODEL=org/trrg-phantom python app.py             # how the Hugging Face Space starts it

The demo is thin: the model is loaded once, ``predict()`` is a pure generator
function of the uploaded files and the settings, and a bounded queue runs one request at a time.
This file imports only gradio, pandas, torch and transformers (never ``trrg``): the model's own remote
code (``trust_remote_code=True``) brings the image loading, so the file runs unchanged on a Space.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pandas as pd
import torch

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".dcm", ".dicom"]
MAX_FILE_SIZE = "50mb"  # a large uncompressed DICOM plate is ~35 MB
BEAMS_RANGE, NEW_TOKENS_RANGE = (1, 4), (16, 256)
QUEUE_SIZE = 16


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def load_model(model_id_or_dir: str):
    """(model, processor) from a local folder or a hub id (the local cache is used when offline)."""
    from transformers import AutoModel, AutoProcessor

    try:
        model = AutoModel.from_pretrained(model_id_or_dir, trust_remote_code=True).eval()
    except OSError as error:  # e.g. a hub id that is not in the local cache while offline
        raise FileNotFoundError(f"--model {model_id_or_dir}: not a local folder and not loadable as a hub id "
                                f"({str(error).splitlines()[0]})") from error
    if not hasattr(model, "predict_diseases") or not hasattr(model, "generate"):
        raise SystemExit(
            f"trrg space: {model_id_or_dir} holds a {type(model).__name__}, not a TRRG report generator "
            "(stage 2). Pass the folder written by `trrg finetune`, `trrg export` or `trrg init`."
        )
    processor = AutoProcessor.from_pretrained(model_id_or_dir, trust_remote_code=True)
    return model, processor


def training_data_of(config) -> bool | None:
    """True when the model was trained on the synthetic phantom, False when on something else,
    None when the config does not say (``config.trrg_training_data``)."""
    data = getattr(config, "trrg_training_data", None)
    if not data:
        return None
    return str(data).lower() == "phantom"


def _image_module(processor):
    """The module of the processor's image processor: it holds ``load_xray_image`` and
    ``XRayImageError``, whether it came from the installed package or from the model's remote code."""
    return sys.modules[type(processor.image_processor).__module__]


# ---------------------------------------------------------------------------------------------
# Prediction (pure: files + settings in, report / probabilities / clues out)
# ---------------------------------------------------------------------------------------------


def load_views(frontal, lateral, processor) -> list:
    """The uploaded views as grayscale PIL images; bad files raise ``gr.Error`` with the reason."""
    if not frontal:
        raise gr.Error("Upload a frontal view (PNG, JPEG or DICOM) first.", duration=None)
    module = _image_module(processor)
    views = []
    for path in [frontal] + ([lateral] if lateral else []):
        try:
            views.append(module.load_xray_image(Path(path)))
        except module.XRayImageError as error:
            # Name the file as the user knows it, not by the server's temporary folder.
            message = str(error).replace(str(path), Path(path).name)
            raise gr.Error(html.escape(message), duration=None, print_exception=False) from None
    return views


def probability_table(probs: torch.Tensor, names: list[str]) -> pd.DataFrame:
    """The bar chart's data: one row per disease, in the model's order."""
    return pd.DataFrame({"disease": list(names), "probability": [round(float(p), 4) for p in probs]})


def clue_thresholds(config) -> list[float]:
    """Each disease's decision threshold (0.5 where the model was not tuned)."""
    values = getattr(config.clue_config, "clue_thresholds", None)
    return list(values) if values else [0.5] * len(config.disease_names)


def clues_markdown(probs: torch.Tensor, config) -> str:
    """Which disease clues the model injected as "present", as Markdown: the report is written from
    these decisions, so a visitor can check that it says what the model perceives."""
    names = list(config.disease_names)
    if not getattr(config.clue_config, "use_clue_injection", True):
        return "This model injects **no** disease clues; the probabilities are for information only."
    present = [(name, float(p), t) for name, p, t in zip(names, probs, clue_thresholds(config)) if float(p) >= t]
    present.sort(key=lambda item: -item[1])
    listed = "\n".join(f"- **{name}**: {p:.2f} (threshold {t:.2f})" for name, p, t in present) or "- none"
    return (f"Clues injected as *present* (each disease has its own threshold; the other "
            f"{len(names) - len(present)} are injected as *absent*):\n\n{listed}")


def predict(frontal, lateral, num_beams, max_new_tokens, *, model, processor) -> Iterator[tuple]:
    """Yield ``(report_so_far, probabilities, clues_markdown)``: the report grows token by token
    (greedy); with ``num_beams > 1`` generate() cannot stream, so the report comes in one piece."""
    views = load_views(frontal, lateral, processor)
    inputs = processor(images=[views], return_tensors="pt")
    probs = model.predict_diseases(inputs["pixel_values"], inputs["view_mask"])[0]  # (diseases,)
    table, clues = probability_table(probs, model.config.disease_names), clues_markdown(probs, model.config)
    yield "", table, clues
    settings = {"num_beams": int(num_beams), "max_new_tokens": int(max_new_tokens), "do_sample": False}
    if settings["num_beams"] > 1:
        with torch.no_grad():
            sequences = model.generate(**inputs, **settings)
        yield processor.batch_decode(sequences, prompt_length=inputs["input_ids"].shape[1])[0], table, clues
        return
    for text in stream_report(model, processor, inputs, settings):
        yield text, table, clues


def stream_report(model, processor, inputs, settings: dict) -> Iterator[str]:
    """Greedy generation in a thread, decoded as it goes (``TextIteratorStreamer``)."""
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with torch.no_grad():
                model.generate(**inputs, **settings, streamer=streamer)
        except BaseException as error:  # reported in the request's thread, below
            failure.append(error)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text.strip()
    thread.join()
    if failure:
        raise failure[0]


# ---------------------------------------------------------------------------------------------
# User interface
# ---------------------------------------------------------------------------------------------


def banner(is_phantom: bool | None) -> str:
    lines = [
        "# TRRG: truthful radiology report generation",
        "**Intended use: research and demonstration only. Not for clinical use; not a medical device.** "
        "Reports and probabilities may be wrong and must not inform any diagnosis or treatment.",
    ]
    if is_phantom:
        lines.append(
            "This model was trained on the **synthetic phantom** only: it knows synthetic images, and "
            "its output for real radiographs is meaningless."
        )
    elif is_phantom is None:
        lines.append("The training data of this model is **unknown** (its config does not say).")
    return "\n\n".join(lines)


def example_rows() -> list[list]:
    """[frontal, lateral] pairs from ``examples/``: phantom studies first, then real NIH images."""
    rows = []
    for frontal in sorted(EXAMPLES_DIR.glob("phantom_*_frontal.png")) + sorted(EXAMPLES_DIR.glob("nih_*.png")):
        lateral = frontal.with_name(frontal.name.replace("_frontal", "_lateral"))
        rows.append([str(frontal), str(lateral) if lateral != frontal and lateral.exists() else None])
    return rows


def build_demo(model, processor, is_phantom: bool | None) -> gr.Blocks:
    """The page: uploads + settings on the left, streamed report, probabilities and clues on the right."""
    generation = getattr(model, "generation_config", None)
    default_tokens = int(getattr(generation, "max_new_tokens", None) or 96)
    default_tokens = min(max(default_tokens, NEW_TOKENS_RANGE[0]), NEW_TOKENS_RANGE[1])

    def generate_report(frontal, lateral, num_beams, max_new_tokens):
        yield from predict(frontal, lateral, num_beams, max_new_tokens, model=model, processor=processor)

    with gr.Blocks(title="TRRG report generation") as demo:
        gr.Markdown(banner(is_phantom), elem_id="banner")
        with gr.Row():
            with gr.Column(scale=1):
                frontal = gr.File(label="Frontal view (PNG, JPEG or DICOM)", file_types=UPLOAD_TYPES, elem_id="frontal")
                lateral = gr.File(label="Lateral view (optional)", file_types=UPLOAD_TYPES, elem_id="lateral")
                with gr.Accordion("Generation settings", open=False):
                    num_beams = gr.Slider(*BEAMS_RANGE, value=1, step=1, label="Beams (1 streams the report)")
                    max_new_tokens = gr.Slider(*NEW_TOKENS_RANGE, value=default_tokens, step=1, label="Maximum new tokens")
                button = gr.Button("Generate report", variant="primary")
            with gr.Column(scale=2):
                report = gr.Textbox(label="Report", lines=6, interactive=False, elem_id="report")
                with gr.Row():
                    chart = gr.BarPlot(
                        x="disease", y="probability", y_lim=[0, 1], sort=list(model.config.disease_names),
                        x_label_angle=-45, height=360,
                        label="Zero-shot disease probabilities", elem_id="probabilities",
                    )
                    clues = gr.Markdown("Disease clues appear here after a report is generated.", elem_id="clues")
        gr.Examples(example_rows(), inputs=[frontal, lateral], label="Examples (phantom studies, then NIH ChestX-ray14)")
        gr.Markdown(
            "Real examples: NIH Clinical Center ChestX-ray14 (Wang et al., CVPR 2017), "
            "https://nihcc.app.box.com/v/ChestXray-NIHCC; see examples/ATTRIBUTION.md."
        )
        button.click(generate_report, [frontal, lateral, num_beams, max_new_tokens], [report, chart, clues],
                     api_name="generate_report")
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)


def launch(demo: gr.Blocks, host: str, port: int, **kwargs):
    """Serve the demo: no public share link, no extra readable folders, uploads capped in size."""
    return demo.launch(server_name=host, server_port=port, share=False, allowed_paths=None,
                       max_file_size=MAX_FILE_SIZE, **kwargs)


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


if __name__ == "__main__":  # a Hugging Face Space runs app.py itself (with TRRG_MODEL set)
    sys.exit(main())
