"""``trrg space``: the Gradio demo of a TRRG report generator (also the Hugging Face Space's app file).

    trrg space --model models/trrg-phantom                 # a local folder
    trrg space --model org/trrg-phantom --port 7861       # a hub id (downloaded or from the cache)
    TRRG_MODEL=org/trrg-phantom python app.py             # how the Hugging Face Space starts it

The demo is thin: the model is loaded once, ``predict()`` is a pure generator
function of the uploaded files and the settings, and a bounded queue runs one request at a time.
Each uploaded view is shown as an image (DICOM decoded by the model's loader), and next to the
probabilities the views carry the evidence map of a chosen disease (``evidence_overlay``).
This file imports only gradio, numpy, pandas, PIL, torch and transformers (never ``trrg``): the model's
own remote code (``trust_remote_code=True``) brings the image loading, so the file runs unchanged on a Space.
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
import numpy as np
import pandas as pd
import torch
from PIL import Image

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".dcm", ".dicom"]
MAX_FILE_SIZE = "50mb"  # a large uncompressed DICOM plate is ~35 MB
BEAMS_RANGE, NEW_TOKENS_RANGE = (1, 4), (16, 256)
QUEUE_SIZE = 16
PREVIEW_SIDE = 768  # the uploaded views are shown at most this big (the model sees its own letterboxed size)
OVERLAY_SIDE = 512  # the evidence overlays are drawn on the letterboxed square at least this big
OVERLAY_ALPHA = 0.6  # the opacity of the hottest evidence; the coldest is transparent
VIEW_NAMES = ("frontal", "lateral")


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
    return [load_view(path, processor) for path in [frontal] + ([lateral] if lateral else [])]


def load_view(path, processor) -> Image.Image:
    """One uploaded file as a grayscale PIL image (the model's ``load_xray_image``: PNG, JPEG, DICOM);
    a bad file raises ``gr.Error`` with the loader's reason, naming the file as the user knows it."""
    module = _image_module(processor)
    try:
        return module.load_xray_image(Path(path))
    except module.XRayImageError as error:
        # Name the file as the user knows it, not by the server's temporary folder.
        message = str(error).replace(str(path), Path(path).name)
        raise gr.Error(html.escape(message), duration=None, print_exception=False) from None


def preview_view(path, processor) -> Image.Image | None:
    """What the page shows for an uploaded view: the decoded image (a DICOM too, which a browser cannot
    show), at most ``PREVIEW_SIDE`` px a side, or None without a file. A bad file gives a warning here
    and its error when a report is asked for."""
    if not path:
        return None
    try:
        image = load_view(path, processor)
    except gr.Error as error:
        gr.Warning(error.message)
        return None
    image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.BILINEAR)
    return image


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
    """Yield ``(report_so_far, probabilities, clues_markdown, evidence)``: the report grows token by
    token (greedy); with ``num_beams > 1`` generate() cannot stream, so the report comes in one piece.
    ``evidence`` (the same dict every time, see ``perceive``) holds what the overlays are drawn from."""
    views = load_views(frontal, lateral, processor)
    inputs = processor(images=[views], return_tensors="pt")
    evidence = perceive(views, inputs, model, processor)
    probs = torch.tensor(evidence["probs"])
    table, clues = probability_table(probs, model.config.disease_names), clues_markdown(probs, model.config)
    yield "", table, clues, evidence
    settings = {"num_beams": int(num_beams), "max_new_tokens": int(max_new_tokens), "do_sample": False}
    if settings["num_beams"] > 1:
        with torch.no_grad():
            sequences = model.generate(**inputs, **settings)
        report = processor.batch_decode(sequences, prompt_length=inputs["input_ids"].shape[1])[0]
        yield report, table, clues, evidence
        return
    for text in stream_report(model, processor, inputs, settings):
        yield text, table, clues, evidence


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
# Evidence maps (pure: the perception of one request in, overlay images out)
# ---------------------------------------------------------------------------------------------


def perceive(views: list, inputs, model, processor) -> dict:
    """The zero-shot perception of one study, kept (in a ``gr.State``) to draw the overlays from:
    ``names``, ``probs`` and ``present`` (the clue injected per disease), ``views`` (each view
    letterboxed into the square the model saw, at least ``OVERLAY_SIDE`` px), ``maps`` (views, diseases,
    h, w) float32 or None for a model without evidence maps, and ``default`` (the disease shown first)."""
    names = list(model.config.disease_names)
    if hasattr(model, "predict_clues"):
        out = model.predict_clues(inputs["pixel_values"], inputs["view_mask"], return_maps=True)
        probs, states, maps = out["disease_probs"][0], out["clue_states"][0], out.get("evidence_maps")
    else:  # an older model: probabilities only
        probs = model.predict_diseases(inputs["pixel_values"], inputs["view_mask"])[0]
        states = (probs >= torch.tensor(clue_thresholds(model.config))).long()
        maps = None
    injects = bool(getattr(model.config.clue_config, "use_clue_injection", True))
    present = [injects and bool(state) for state in states.tolist()]
    side = max(int(processor.image_processor.image_size), OVERLAY_SIDE)
    letterbox = _image_module(processor).letterbox
    return {
        "names": names,
        "probs": [float(p) for p in probs],
        "present": present,
        "views": [letterbox(view, side) for view in views],
        "maps": None if maps is None else maps[0, : len(views)].float().cpu().numpy(),
        "default": default_disease(probs.tolist(), present, names),
    }


def default_disease(probs: list[float], present: list[bool], names: list[str]) -> str:
    """The disease whose map is shown first: the most probable of those injected as present, else
    the most probable of all."""
    candidates = [i for i, is_present in enumerate(present) if is_present] or list(range(len(names)))
    return names[max(candidates, key=lambda i: probs[i])]


def disease_choices(evidence: dict) -> list[tuple[str, str]]:
    """The dropdown's (label, value) pairs: each disease with its probability and clue."""
    return [(f"{name} ({p:.2f}{', present' if is_present else ''})", name)
            for name, p, is_present in zip(evidence["names"], evidence["probs"], evidence["present"])]


def _colormap(heat: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) float RGB in [0, 255]: blue, cyan, yellow, red."""
    stops = np.array([0.0, 1 / 3, 2 / 3, 1.0])
    colours = np.array([[0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0]], dtype=np.float64)
    return np.stack([np.interp(heat, stops, colours[:, channel]) for channel in range(3)], axis=-1)


def evidence_overlay(image, evidence: np.ndarray, value_range: tuple[float, float] | None = None,
                     alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """Blend an evidence map onto the image it was computed on, as a heat overlay.

    Args:
        image: the displayed view (PIL image or (H, W[, 3]) uint8 array), i.e. the letterboxed square the
            model saw, at any size: the map spans the whole of it.
        evidence: (h, w) map on the model's patch grid (cos to the disease prompt minus cos to its
            negation; higher = more evidence there). It is resized bilinearly to the image's size.
        value_range: (low, high) mapped to the cold and the hot end of the colours; default the map's own
            minimum and maximum (pass one range to views that must be compared).
        alpha: opacity of the hottest colour; the opacity grows linearly from 0 at ``low``, so the
            radiograph shows through where there is little evidence.

    Returns:
        An RGB PIL image of the image's size: blue (transparent) -> cyan -> yellow -> red (opaque).
    """
    base = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    base = np.asarray(base.convert("RGB"), dtype=np.float64)
    height, width = base.shape[:2]
    grid = Image.fromarray(np.asarray(evidence, dtype=np.float32), mode="F")
    values = np.asarray(grid.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float64)
    low, high = value_range if value_range is not None else (float(np.min(evidence)), float(np.max(evidence)))
    heat = np.clip((values - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(values)
    opacity = (alpha * heat)[..., None]
    blended = base * (1.0 - opacity) + _colormap(heat) * opacity
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), mode="RGB")


def evidence_views(evidence: dict | None, disease: str | None) -> tuple:
    """``(frontal overlay, lateral overlay update, caption)`` for one disease of a request's evidence:
    what the dropdown's change shows (no model call). Both views share one colour range."""
    if not evidence or disease not in evidence.get("names", []):
        return gr.skip(), gr.skip(), gr.skip()
    index = evidence["names"].index(disease)
    views = evidence["views"]
    state = "present" if evidence["present"][index] else "absent"
    caption = f"**{disease}**: probability {evidence['probs'][index]:.2f}, clue injected as *{state}*. "
    if evidence["maps"] is None:
        overlays = [view.convert("RGB") for view in views]
        caption += "This model gives no evidence maps: the views are shown as the model saw them."
    else:
        maps = evidence["maps"][:, index]
        low, high = float(maps.min()), float(maps.max())
        overlays = [evidence_overlay(view, view_map, (low, high)) for view, view_map in zip(views, maps)]
        caption += (f"Evidence map (per image patch, cosine to the finding's prompt minus cosine to its "
                    f"negation): colours run from {low:+.3f} (clear) to {high:+.3f} (red)"
                    + (", one scale for both views." if len(views) > 1 else "."))
    lateral = overlays[1] if len(overlays) > 1 else None
    return overlays[0], gr.update(value=lateral, visible=lateral is not None), caption


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
    """The page: uploads (each shown as an image) + settings on the left; on the right the streamed
    report, the probabilities next to the views overlaid with a chosen disease's evidence map, and the
    clues; example studies as thumbnails below."""
    generation = getattr(model, "generation_config", None)
    default_tokens = int(getattr(generation, "max_new_tokens", None) or 96)
    default_tokens = min(max(default_tokens, NEW_TOKENS_RANGE[0]), NEW_TOKENS_RANGE[1])
    names = list(model.config.disease_names)

    def generate_report(frontal, lateral, num_beams, max_new_tokens):
        first = True
        for report, table, clues, evidence in predict(frontal, lateral, num_beams, max_new_tokens,
                                                      model=model, processor=processor):
            if first:  # the overlays, the dropdown and the state once; then only the growing report
                choices = gr.update(choices=disease_choices(evidence), value=evidence["default"], interactive=True)
                yield report, table, clues, *evidence_views(evidence, evidence["default"]), choices, evidence
                first = False
            else:
                yield report, table, clues, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()

    def preview(path):  # a view's image shows only while it holds one
        image = preview_view(path, processor)
        return gr.update(value=image, visible=image is not None)

    # Display-only events (decoding an upload, drawing an overlay) do not wait behind a generation.
    display = {"api_visibility": "private", "concurrency_id": "display", "concurrency_limit": 2,
               "show_progress": "minimal"}
    view_image = {"type": "pil", "format": "png", "interactive": False, "height": 260, "buttons": ["fullscreen"]}
    with gr.Blocks(title="TRRG report generation") as demo:
        gr.Markdown(banner(is_phantom), elem_id="banner")
        with gr.Row():
            with gr.Column(scale=1):
                frontal = gr.File(label="Frontal view (PNG, JPEG or DICOM)", file_types=UPLOAD_TYPES, elem_id="frontal")
                frontal_view = gr.Image(label="Frontal view", elem_id="frontal-view", visible=False, **view_image)
                lateral = gr.File(label="Lateral view (optional)", file_types=UPLOAD_TYPES, elem_id="lateral")
                lateral_view = gr.Image(label="Lateral view", elem_id="lateral-view", visible=False, **view_image)
                with gr.Accordion("Generation settings", open=False):
                    num_beams = gr.Slider(*BEAMS_RANGE, value=1, step=1, label="Beams (1 streams the report)")
                    max_new_tokens = gr.Slider(*NEW_TOKENS_RANGE, value=default_tokens, step=1, label="Maximum new tokens")
                button = gr.Button("Generate report", variant="primary")
            with gr.Column(scale=2):
                report = gr.Textbox(label="Report", lines=6, interactive=False, elem_id="report")
                with gr.Row():
                    chart = gr.BarPlot(
                        x="disease", y="probability", y_lim=[0, 1], sort=names,
                        x_label_angle=-45, height=360,
                        label="Zero-shot disease probabilities", elem_id="probabilities",
                    )
                    with gr.Column():
                        disease = gr.Dropdown(names, value=None, label="Evidence map of", interactive=False,
                                              elem_id="evidence-disease")
                        with gr.Row():
                            overlay = gr.Image(label="Frontal view + evidence", elem_id="overlay",
                                               **{**view_image, "height": 300})
                            overlay_lateral = gr.Image(label="Lateral view + evidence", elem_id="overlay-lateral",
                                                       visible=False, **{**view_image, "height": 300})
                        caption = gr.Markdown("The evidence map of a disease appears here after a report is generated.",
                                              elem_id="evidence-caption")
                clues = gr.Markdown("Disease clues appear here after a report is generated.", elem_id="clues")
        evidence = gr.State(None)
        gr.Examples(
            [[frontal_path, lateral_path, frontal_path, lateral_path] for frontal_path, lateral_path in example_rows()],
            inputs=[frontal, lateral, frontal_view, lateral_view], visible_columns=[2, 3],
            label="Examples (phantom studies, then NIH ChestX-ray14): click one to fill the views",
        )
        gr.Markdown(
            "Real examples: NIH Clinical Center ChestX-ray14 (Wang et al., CVPR 2017), "
            "https://nihcc.app.box.com/v/ChestXray-NIHCC; see examples/ATTRIBUTION.md."
        )
        frontal.change(preview, frontal, frontal_view, **display)
        lateral.change(preview, lateral, lateral_view, **display)
        button.click(generate_report, [frontal, lateral, num_beams, max_new_tokens],
                     [report, chart, clues, overlay, overlay_lateral, caption, disease, evidence],
                     api_name="generate_report")
        disease.input(lambda name, state: evidence_views(state, name), [disease, evidence],
                      [overlay, overlay_lateral, caption], **display)
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
