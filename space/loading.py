"""The model and the uploads: loading a TRRG report generator (a folder or a hub id), what the page says
of its training data (the banner), and reading an uploaded view with the model's own image loader.

Imports only gradio, PIL and transformers (never ``trrg``): the model's remote code brings the image
loading, so the file runs unchanged on a Hugging Face Space.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

import gradio as gr
from PIL import Image

PREVIEW_SIDE = 768  # the uploaded views are shown at most this big (the model sees its own letterboxed size)


def load_model(model_id_or_dir: str):
    """(model, processor) from a local folder or a hub id (the local cache is used when offline)."""
    from transformers import AutoModel, AutoProcessor

    try:
        model = AutoModel.from_pretrained(model_id_or_dir, trust_remote_code=True).eval()
    except OSError as error:  # e.g. a hub id that is not in the local cache while offline
        raise FileNotFoundError(f"--model {model_id_or_dir}: not a local folder and not loadable as a hub id "
                                f"({str(error).splitlines()[0]})") from error
    if not hasattr(model, "report_pipeline"):
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


def banner(is_phantom: bool | None, training_data: str | None = None) -> str:
    """The page's heading: the intended use, and what the model was trained on (``training_data``, the
    name ``config.trrg_training_data`` records: "phantom", "dicom data set 3f2a9c1e", ...; never a path)."""
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
    elif training_data:
        lines.append(f"This model was fine-tuned on **{html.escape(str(training_data))}** (as its config records it).")
    return "\n\n".join(lines)


def image_module(processor):
    """The module of the processor's image processor: it holds ``load_xray_image``, ``XRayImageError`` and
    ``letterbox``, whether it came from the installed package or from the model's remote code."""
    return sys.modules[type(processor.image_processor).__module__]


def load_views(frontal, lateral, processor) -> list:
    """The uploaded views as grayscale PIL images; bad files raise ``gr.Error`` with the reason."""
    if not frontal:
        raise gr.Error("Upload a frontal view (PNG, JPEG or DICOM) first.", duration=None)
    return [load_view(path, processor) for path in [frontal] + ([lateral] if lateral else [])]


def load_view(path, processor) -> Image.Image:
    """One uploaded file as a grayscale PIL image (the model's ``load_xray_image``: PNG, JPEG, and DICOM
    told by its content, whatever the file's name); a bad file raises ``gr.Error`` with the loader's
    reason, naming the file as the user knows it."""
    module = image_module(processor)
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
