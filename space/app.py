"""``trrg space``: the Gradio demo of a TRRG report generator (also the Hugging Face Space's app file).

    trrg space --model models/trrg-phantom                 # a local folder
    trrg space --model org/trrg-phantom --port 7861       # a hub id (downloaded or from the cache)
    TRRG_MODEL=org/trrg-phantom python app.py             # how the Hugging Face Space starts it

The demo is thin: the model is loaded once, and the served page hands its requests to a
``ReportBatcher``: one worker thread that generates the requests arriving together as one batch
through the model's report pipeline (its remote code's ``TRRGReportPipeline``, the one way from a study
to a report); a lone request streams its report token by token.
Each uploaded view is shown as an image (DICOM decoded by the model's loader), and next to the
probabilities the views carry the evidence map of a chosen disease (``evidence_overlay``).
This file imports only gradio, numpy, pandas, PIL, torch and transformers (never ``trrg``): the model's
own remote code (``trust_remote_code=True``) brings the image loading, so the file runs unchanged on a Space.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import html
import io
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import torch
from PIL import Image
from transformers import TextStreamer

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".dcm", ".dicom"]
MAX_FILE_SIZE = "50mb"  # a large uncompressed DICOM plate is ~35 MB
BEAMS_RANGE, NEW_TOKENS_RANGE = (1, 4), (16, 256)
# Serving (measured with benchmarks/space_load.py; see README.md, "Many users at once"):
MAX_BATCH_SIZE = 32  # studies generated together; throughput still grows up to here, one batch stays short
BATCH_WINDOW_S = 0.05  # after a request arrives, the worker waits this long for others of the same burst
CONCURRENCY_LIMIT = 2 * MAX_BATCH_SIZE  # requests inside the app (one batch running, the next one forming)
QUEUE_SIZE = 64  # waiting behind those; more are refused at once ("Queue is full") instead of waiting minutes
# Each session keeps its last request's evidence (the letterboxed views, ~0.3-0.6 MB) for the dropdown:
SESSIONS_KEPT = 1000  # gradio forgets the oldest sessions beyond this (its default, 10000, is ~5 GB)
EVIDENCE_TTL_S = 3600  # and a session's evidence an hour after its last report
# gradio's cache of uploads and served overlays (files on disk, ~1 MB per report) is emptied of files
# older than this every as often: without it the disk fills while the Space stays up.
CACHE_FILE_TTL_S = 3600
PREVIEW_SIDE = 768  # the uploaded views are shown at most this big (the model sees its own letterboxed size)
OVERLAY_SIDE = 512  # the evidence overlays are drawn on the letterboxed square at least this big
OVERLAY_ALPHA = 0.6  # the opacity of the hottest evidence; the coldest is transparent
OVERLAY_FORMAT = "jpeg"  # served overlays: ~1 ms to encode a 512 px square where a PNG takes ~60-120 ms
STREAM_INTERVAL_S = 0.05  # a streamed report is sent at most 20 times a second (each message costs the server)
VIEW_NAMES = ("frontal", "lateral")
LOG = logging.getLogger("trrg.space")  # INFO: one line per batch (size, settings, seconds)


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
    if not hasattr(model, "report_pipeline"):
        raise SystemExit(
            f"trrg space: the remote code of {model_id_or_dir} predates the report pipeline this page runs. "
            "Export the model again with the current trrg (`trrg export --checkpoint FOLDER --out NEW`)."
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
# Uploads, and what the page shows of a study's perception (pure)
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


def probability_table(perception) -> pd.DataFrame:
    """The bar chart's data: one row per disease, in the model's order (``perception``: a study's
    ``TRRGStudyPerception`` from the report pipeline)."""
    return pd.DataFrame({"disease": list(perception.disease_probs),
                         "probability": [round(float(p), 4) for p in perception.disease_probs.values()]})


def clues_markdown(perception, config) -> str:
    """Which disease clues the model injected as "present", as Markdown: the report is written from
    these decisions, so a visitor can check that it says what the model perceives."""
    names = list(perception.disease_probs)
    if not getattr(config.clue_config, "use_clue_injection", True):
        return "This model injects **no** disease clues; the probabilities are for information only."
    present = [(name, perception.disease_probs[name], perception.clue_thresholds[name])
               for name in names if perception.clues[name]]
    present.sort(key=lambda item: -item[1])
    listed = "\n".join(f"- **{name}**: {p:.2f} (threshold {t:.2f})" for name, p, t in present) or "- none"
    return (f"Clues injected as *present* (each disease has its own threshold; the other "
            f"{len(names) - len(present)} are injected as *absent*):\n\n{listed}")


def generation_settings(num_beams, max_new_tokens) -> dict:
    """``generate()`` keyword arguments of the page's settings (greedy or beam search, no sampling)."""
    return {"num_beams": int(num_beams), "max_new_tokens": int(max_new_tokens), "do_sample": False}


# ---------------------------------------------------------------------------------------------
# Serving many users: requests that arrive together are generated as one batch
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class ReportRequest:
    """One study waiting for its report: its decoded views, its ``generate()`` settings, and ``post``,
    called from the worker thread with each message for the request (see ``ReportBatcher``)."""

    views: list
    settings: dict
    post: Callable[[tuple], None]
    cancelled: bool = False  # set when the page went away: a request still waiting is dropped
    perceived: bool = field(default=False, repr=False)


class ReportBatcher:
    """Generates the reports of many users in batches, in one worker thread.

    ``submit()`` queues a request. The worker takes the oldest, waits ``window_s`` for others of the same
    burst, and runs up to ``max_batch_size`` waiting requests with the same settings as one batch through
    the model's report pipeline: the processor pads the prompts on the left (attention mask 0 on the
    padding) and stacks the views (``view_mask``), so each row gets the report it would get alone. Each
    request is sent ``("perceived", perception)`` (its ``TRRGStudyPerception``, evidence maps included) as
    soon as the batch's perception is done, ``("text", report_so_far)`` while it streams (a lone greedy
    request: ``generate()`` with a streamer), and last ``("report", report)`` (its ``TRRGReport``) or
    ``("error", exception)``. A batch that raises is run again one request at a time, so a study that
    breaks the model fails alone. The worker exits after ``idle_s`` without requests and starts again
    with the next one.
    """

    def __init__(self, model, processor, max_batch_size: int | None = None, window_s: float | None = None,
                 idle_s: float = 30.0, stream_interval_s: float | None = None):
        self.model, self.processor, self.idle_s = model, processor, idle_s
        self.reporter = model.report_pipeline(processor)
        self.max_batch_size = MAX_BATCH_SIZE if max_batch_size is None else max_batch_size
        self.window_s = BATCH_WINDOW_S if window_s is None else window_s
        self.stream_interval_s = STREAM_INTERVAL_S if stream_interval_s is None else stream_interval_s
        self.batch_sizes: Counter[int] = Counter()  # batch size -> batches run (tests, benchmarks)
        self._pending: list[ReportRequest] = []
        self._held = 0
        self._worker: threading.Thread | None = None
        self._condition = threading.Condition()

    def submit(self, request: ReportRequest) -> ReportRequest:
        with self._condition:
            self._pending.append(request)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="trrg-report-batcher", daemon=True)
                self._worker.start()
            self._condition.notify_all()
        return request

    def pending(self) -> int:
        """Requests waiting for a batch."""
        with self._condition:
            return sum(not request.cancelled for request in self._pending)

    @contextlib.contextmanager
    def held(self):
        """No batch starts while held; requests collect and start together afterwards (tests use this
        to make a burst of requests one batch, whatever the timing)."""
        with self._condition:
            self._held += 1
        try:
            yield self
        finally:
            with self._condition:
                self._held -= 1
                self._condition.notify_all()

    # -- the worker thread -----------------------------------------------------------------------
    def _work(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self._run(batch)
        finally:  # an unexpected end too: the next submit() starts a new worker
            with self._condition:
                if self._worker is threading.current_thread():
                    self._worker = None

    def _ready(self) -> bool:
        self._pending = [request for request in self._pending if not request.cancelled]
        return bool(self._pending) and not self._held

    def _next_batch(self) -> list[ReportRequest] | None:
        with self._condition:
            while True:
                while not self._ready():
                    if not self._condition.wait(self.idle_s) and not self._pending:
                        self._worker = None  # idle: the next submit() starts a new worker
                        return None
                deadline = time.monotonic() + self.window_s  # the rest of a burst is arriving
                while len(self._pending) < self.max_batch_size and (left := deadline - time.monotonic()) > 0:
                    self._condition.wait(left)
                if self._ready():
                    settings = self._pending[0].settings
                    batch = [request for request in self._pending if request.settings == settings]
                    batch = batch[: self.max_batch_size]
                    self._pending = [request for request in self._pending if request not in batch]
                    return batch

    def _run(self, batch: list[ReportRequest]) -> None:
        try:
            self._generate(batch)
        except Exception as error:  # noqa: BLE001 - reported to the request(s), the worker goes on
            if len(batch) == 1:
                batch[0].post(("error", error))
            else:  # one at a time: only the study that breaks the model fails
                for request in batch:
                    self._run([request])

    def _generate(self, batch: list[ReportRequest]) -> None:
        self.batch_sizes[len(batch)] += 1
        start = time.perf_counter()

        def perceived(perceptions: list) -> None:  # before the reports are written: the page shows it at once
            for request, perception in zip(batch, perceptions):
                if not request.perceived:
                    request.perceived = True
                    request.post(("perceived", perception))

        settings = dict(batch[0].settings)
        if len(batch) == 1 and settings["num_beams"] == 1:  # alone: the report streams
            settings["streamer"] = PostingStreamer(self.processor.tokenizer, batch[0].post, self.stream_interval_s)
        reports = self.reporter([request.views for request in batch], batch_size=len(batch), return_evidence_maps=True,
                                perception_callback=perceived, **settings)
        for request, report in zip(batch, reports):
            request.post(("report", report))
        LOG.info("batch of %d (%s): %.2f s, %d waiting", len(batch), batch[0].settings, time.perf_counter() - start,
                 self.pending())


class PostingStreamer(TextStreamer):
    """Posts ``("text", report_so_far)`` as a lone request's report is decoded: each new word, but at most
    once per ``interval_s`` (a model faster than that shows a few words at a time; the whole report
    follows as ``("report", ...)`` anyway)."""

    def __init__(self, tokenizer, post: Callable[[tuple], None], interval_s: float = STREAM_INTERVAL_S):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.post, self.interval_s, self.text, self.last_post = post, interval_s, "", float("-inf")

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text += text
        now = time.monotonic()
        if text.strip() and now - self.last_post >= self.interval_s:
            self.last_post = now
            self.post(("text", self.text.strip()))


def generation_error(error: BaseException) -> gr.Error:
    """What the page shows when the model failed on a study (a bad upload is refused before)."""
    if isinstance(error, gr.Error):
        return error
    message = f"The report could not be generated for this study ({type(error).__name__}: {error})."
    return gr.Error(html.escape(message), duration=None)


# ---------------------------------------------------------------------------------------------
# Evidence maps (pure: the perception of one request in, overlay images out)
# ---------------------------------------------------------------------------------------------


def evidence_of(views: list, perception, config, processor) -> dict:
    """What a request keeps (in a ``gr.State``) to draw the overlays from, given its decoded views and
    its ``TRRGStudyPerception``: ``names``, ``probs`` and ``present`` (the clue injected per disease),
    ``views`` (each view letterboxed into the square the model saw, at least ``OVERLAY_SIDE`` px), ``maps``
    (views, diseases, h, w) float32, and ``default`` (the disease shown first)."""
    names = list(perception.disease_probs)
    probs = [float(p) for p in perception.disease_probs.values()]
    injects = bool(getattr(config.clue_config, "use_clue_injection", True))
    present = [injects and perception.clues[name] for name in names]
    side = max(int(processor.image_processor.image_size), OVERLAY_SIDE)
    letterbox = _image_module(processor).letterbox
    return {
        "names": names,
        "probs": probs,
        "present": present,
        "views": [letterbox(view, side) for view in views],
        "maps": perception.evidence_maps[: len(views)].float().numpy(),
        "default": default_disease(probs, present, names),
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
    maps = evidence["maps"][:, index]
    low, high = float(maps.min()), float(maps.max())
    overlays = [evidence_overlay(view, view_map, (low, high)) for view, view_map in zip(views, maps)]
    caption = (f"**{disease}**: probability {evidence['probs'][index]:.2f}, clue injected as *{state}*. "
               f"Evidence map (per image patch, cosine to the finding's prompt minus cosine to its negation): "
               f"colours run from {low:+.3f} (clear) to {high:+.3f} (red)"
               + (", one scale for both views." if len(views) > 1 else "."))
    lateral = overlays[1] if len(overlays) > 1 else None
    return overlays[0], gr.update(value=lateral, visible=lateral is not None), caption


class ServedImages:
    """Images handed to gradio as files, each written once, atomically, under its content's hash.

    gradio saves a returned PIL image by truncating and rewriting the file named by its hash, even
    when that file exists and a browser is reading it; the same image sent twice at once (a preview
    and its upload event, two pages with the same example) then serves a torn file ("Too little data
    for declared Content-Length") that never loads. A file path is copied into gradio's cache
    atomically and only when missing. The files here are kept ``keep_s`` seconds: gradio copies a
    file as soon as the handler returns."""

    def __init__(self, folder: Path, keep_s: float = 300.0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.keep_s = keep_s
        self._last_sweep = time.monotonic()

    def path(self, image: Image.Image, format: str) -> str:
        buffer = io.BytesIO()
        image.save(buffer, format=format, **({"quality": 90} if format == "jpeg" else {}))
        data = buffer.getvalue()
        target = self.folder / f"{hashlib.sha256(data).hexdigest()[:24]}.{format}"
        if not target.exists():
            staging = target.with_name(f".{target.name}.{threading.get_ident()}.tmp")
            staging.write_bytes(data)
            os.replace(staging, target)
        self._sweep()
        return str(target)

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < self.keep_s:
            return
        self._last_sweep = now
        cutoff = time.time() - self.keep_s
        for old in self.folder.iterdir():
            with contextlib.suppress(OSError):  # another thread removed or is replacing it
                if old.stat().st_mtime < cutoff:
                    old.unlink()


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

    batcher = ReportBatcher(model, processor)
    served = ServedImages(Path(tempfile.mkdtemp(prefix="trrg-space-images-")))

    def served_views(views: tuple) -> tuple:
        """``evidence_views``' overlays as served files (see ``ServedImages``)."""
        frontal, lateral, caption = views
        if isinstance(frontal, Image.Image):
            frontal = served.path(frontal, OVERLAY_FORMAT)
        if isinstance(lateral, dict) and isinstance(lateral.get("value"), Image.Image):
            lateral = {**lateral, "value": served.path(lateral["value"], OVERLAY_FORMAT)}
        return frontal, lateral, caption

    def first_message(views, perception) -> tuple:
        """The probabilities, clues, overlays, dropdown and state of a request (drawn off the event loop)."""
        evidence = evidence_of(views, perception, model.config, processor)
        table, clues = probability_table(perception), clues_markdown(perception, model.config)
        choices = gr.update(choices=disease_choices(evidence), value=evidence["default"], interactive=True)
        return table, clues, (*served_views(evidence_views(evidence, evidence["default"])), choices, evidence)

    async def generate_report(frontal, lateral, num_beams, max_new_tokens, request: gr.Request = None):
        """First the probabilities, clues, overlays, dropdown and state with an empty report; then only the
        report, growing when it streams. The generation is the batcher's, shared with the requests that
        arrived at the same time. A bad upload is refused here, before it reaches a batch."""
        views = await asyncio.to_thread(load_views, frontal, lateral, processor)
        loop, inbox = asyncio.get_running_loop(), asyncio.Queue()

        def post(message: tuple) -> None:  # called in the worker thread
            with contextlib.suppress(RuntimeError):  # the event loop is gone (server closing)
                loop.call_soon_threadsafe(inbox.put_nowait, message)

        job = batcher.submit(ReportRequest(views, generation_settings(num_beams, max_new_tokens), post))
        table = clues = None
        skip = (gr.skip(),) * 5
        try:
            while True:
                kind, payload = await inbox.get()
                if kind == "error":
                    raise generation_error(payload)
                if kind == "perceived":
                    table, clues, rest = await asyncio.to_thread(first_message, views, payload)
                    yield "", table, clues, *rest
                elif kind == "text":
                    if inbox.empty():  # else a newer text (or the report) is already waiting
                        yield payload, gr.skip(), gr.skip(), *skip
                else:
                    yield payload.report, table, clues, *skip
                    return
        finally:
            job.cancelled = True  # a page that left before its batch started is not generated
            forget_update_components(demo, request)

    def preview(path):  # a view's image shows only while it holds one
        image = preview_view(path, processor)
        return gr.update(value=served.path(image, "png") if image is not None else None, visible=image is not None)

    # Display-only events (decoding an upload, drawing an overlay) do not wait behind a generation.
    display = {"api_visibility": "private", "concurrency_id": "display", "concurrency_limit": 2,
               "show_progress": "minimal"}
    view_image = {"type": "pil", "format": "png", "interactive": False, "height": 260, "buttons": ["fullscreen"]}
    with gr.Blocks(title="TRRG report generation", delete_cache=(CACHE_FILE_TTL_S, CACHE_FILE_TTL_S)) as demo:
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
                            overlay_image = {**view_image, "height": 300, "format": OVERLAY_FORMAT}
                            overlay = gr.Image(label="Frontal view + evidence", elem_id="overlay", **overlay_image)
                            overlay_lateral = gr.Image(label="Lateral view + evidence", elem_id="overlay-lateral",
                                                       visible=False, **overlay_image)
                        caption = gr.Markdown("The evidence map of a disease appears here after a report is generated.",
                                              elem_id="evidence-caption")
                clues = gr.Markdown("Disease clues appear here after a report is generated.", elem_id="clues")
        evidence = gr.State(None, time_to_live=EVIDENCE_TTL_S)
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
                     api_name="generate_report", concurrency_id="generate", concurrency_limit=CONCURRENCY_LIMIT)
        def redraw(name, state, request: gr.Request = None):
            forget_update_components(demo, request)  # those of the previous redraw
            return served_views(evidence_views(state, name))

        disease.input(redraw, [disease, evidence], [overlay, overlay_lateral, caption], **display)
    demo.trrg_batcher = batcher  # for tests and benchmarks
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)


def forget_update_components(demo: gr.Blocks, request: gr.Request | None) -> None:
    """Work around gradio 6 keeping, in the session's config, every component that an update creates
    (each ``gr.skip()`` and ``gr.update()`` output builds one, registered under a new id and never
    dropped): ~20 KB per request, without bound in a session that sends many. Drops the session's
    components that are not the page's own; the page's outputs stay updated under their own ids."""
    try:
        session = demo.state_holder.session_data.get(request.session_hash) if request is not None else None
        if session is None:
            return
        blocks = session.blocks_config.blocks
        for key in [key for key in blocks if key not in demo.blocks]:
            blocks.pop(key, None)
            session.config_values.pop(key, None)
    except (AttributeError, TypeError):  # another gradio: nothing to work around, or not this way
        return


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
