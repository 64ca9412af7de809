"""What the page shows of a study's perception and report (pure: no model call): the probability table,
the clues, the out-of-distribution note, the report's sentences with the observations they state, the
evidence overlays of one observation, and the served-file cache the images go out through.

Imports only gradio, numpy, pandas and PIL (never ``trrg``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

if __package__:  # trrg.space, the package (`trrg space`)
    from .loading import image_module
else:  # app.py run from its own folder (a Hugging Face Space)
    from loading import image_module

OVERLAY_SIDE = 512  # the evidence overlays are drawn on the letterboxed square at least this big
OVERLAY_ALPHA = 0.6  # the opacity of the hottest evidence; the coldest is transparent
OVERLAY_FORMAT = "jpeg"  # served overlays: ~1 ms to encode a 512 px square where a PNG takes ~60-120 ms
VIEW_NAMES = ("frontal", "lateral")
SHOWN, OTHER = "evidence shown", "other"  # the chart's two colours: the observation whose map is shown, the rest
CHART_COLOURS = {SHOWN: "#d62728", OTHER: "#7f9cc4"}


# ---------------------------------------------------------------------------------------------
# The perception as text and chart
# ---------------------------------------------------------------------------------------------


def probability_table(perception, shown: str | None = None) -> pd.DataFrame:
    """The bar chart's data: one row per disease, in the model's order (``perception``: a study's
    ``TRRGStudyPerception`` from the report pipeline, or a request's evidence dict), the disease whose
    evidence map is shown (``shown``) in its own colour."""
    if isinstance(perception, dict):
        names, probs = perception["names"], perception["probs"]
    else:
        names, probs = list(perception.disease_probs), list(perception.disease_probs.values())
    return pd.DataFrame({"disease": list(names), "probability": [round(float(p), 4) for p in probs],
                         "highlight": [SHOWN if name == shown else OTHER for name in names]})


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


def verification_note(report) -> str:
    """What verified decoding changed in the draft the page streamed, as Markdown ("" when nothing): the
    sentences left out and why, the sentences added for clues the draft did not state."""
    if not getattr(report, "verified", True):  # the Space verifies: the pipeline declined (an untrained perception)
        return ("\n\n**Not verified**: this model's perception was never trained (it was built without stage-1 "
                "pre-training), so its clues say nothing about the image and the report was not checked against them.")
    reasons = {"unsupported": "states a finding whose clue is absent", "negates_clue": "denies a present clue",
               "contradicts": "contradicts an earlier sentence"}
    lines = [f'- left out "{r.text}": it {reasons.get(r.reason, r.reason)} ({r.observation})' for r in report.rejected]
    lines += [f'- added "{text}": a present clue the draft did not state' for text in report.completed]
    if not lines:
        return ""
    return "\n\n**Verified decoding** changed the streamed draft:\n\n" + "\n".join(lines)


def distribution_note(perception) -> tuple[str, bool]:
    """``(Markdown, visible)`` of the note next to the report on whether the study resembles the model's
    training images (``perception.in_distribution``): a warning when it does not, a quiet note when the
    model cannot tell (None), nothing when it does."""
    in_distribution = getattr(perception, "in_distribution", None)
    if in_distribution is True:
        return "", False
    if in_distribution is None:
        return ("*This model cannot tell whether this image resembles the images it was trained on (it carries "
                "no statistics of them): judge its findings with that in mind.*", True)
    score = getattr(perception, "familiarity", None)
    try:
        detail = f" (its familiarity score is {float(score):.2f}; above 1 an image is unlike them)"
    except (TypeError, ValueError):
        detail = ""
    return (f"⚠️ **This image does not resemble the images this model was trained on**{detail}. "
            "Its findings for this image (report, probabilities, clues and evidence maps) are unreliable: "
            "do not read them as a description of this patient.", True)


# ---------------------------------------------------------------------------------------------
# The report's sentences
# ---------------------------------------------------------------------------------------------


def sentence_rows(report) -> list[dict]:
    """The report's sentences as the page keeps them: ``{"text", "observations": {name: state}}``
    (``report``: a ``TRRGReport``; the labeler's observations of each sentence)."""
    return [{"text": sentence.text, "observations": dict(sentence.observations)} for sentence in report.sentences]


def sentence_choices(sentences: list[dict]) -> list[tuple[str, int]]:
    """The sentence list's (label, value) pairs: each sentence with the observations it states."""
    choices = []
    for index, sentence in enumerate(sentences):
        stated = ", ".join(f"{name}: {state}" for name, state in sentence["observations"].items())
        choices.append((f"{sentence['text']}  [{stated or 'no observation'}]", index))
    return choices


def sentence_observation(sentence: dict, evidence: dict) -> str | None:
    """The observation whose evidence a sentence points at: of those it states, a positive one first,
    then the most probable; None when it states none the model perceives."""
    stated = [name for name in sentence["observations"] if name in evidence["names"]]
    if not stated:
        return None
    rank = {"positive": 0, "uncertain": 1, "negative": 2}
    probs = dict(zip(evidence["names"], evidence["probs"]))
    return min(stated, key=lambda name: (rank.get(sentence["observations"][name], 3), -probs[name]))


# ---------------------------------------------------------------------------------------------
# Evidence maps (the perception of one request in, overlay images out)
# ---------------------------------------------------------------------------------------------


def evidence_of(views: list, perception, config, processor) -> dict:
    """What a request keeps (in a ``gr.State``) to draw the overlays from, given its decoded views and
    its ``TRRGStudyPerception``: ``names``, ``probs`` and ``present`` (the clue injected per disease),
    ``views`` (each view letterboxed into the square the model saw, at least ``OVERLAY_SIDE`` px), ``maps``
    (views, diseases, h, w) float32 and ``maps_kind`` ("attribution" on the backbone's finest grid when the
    perception carries them, else "patches", the patch grid's evidence maps), and ``default`` (the disease
    shown first)."""
    attribution = getattr(perception, "attribution_maps", None)
    maps = perception.evidence_maps if attribution is None else attribution
    names = list(perception.disease_probs)
    probs = [float(p) for p in perception.disease_probs.values()]
    injects = bool(getattr(config.clue_config, "use_clue_injection", True))
    present = [injects and perception.clues[name] for name in names]
    side = max(int(processor.image_processor.image_size), OVERLAY_SIDE)
    letterbox = image_module(processor).letterbox
    return {
        "names": names,
        "probs": probs,
        "present": present,
        "views": [letterbox(view, side) for view in views],
        "maps": maps[: len(views)].float().numpy(),
        "maps_kind": "patches" if attribution is None else "attribution",
        "default": default_disease(probs, present, names),
        "sentences": [],  # the report's (``sentence_rows``), once it is written
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


def strongest_view(evidence: dict, disease: str) -> int:
    """The index of the view where a disease's evidence map peaks highest."""
    maps = evidence["maps"][:, evidence["names"].index(disease)]
    return int(np.argmax(maps.reshape(len(maps), -1).max(axis=1)))


def evidence_views(evidence: dict | None, disease: str | None, sentence: dict | None = None) -> tuple:
    """``(frontal overlay, lateral overlay update, caption)`` for one disease of a request's evidence:
    what the dropdown's change shows (no model call). Both views share one colour range; with two views
    the caption names the one where the map peaks. ``sentence``: the report sentence that points at the
    disease (a row of ``sentence_rows``), quoted in the caption."""
    if not evidence or disease not in evidence.get("names", []):
        return gr.skip(), gr.skip(), gr.skip()
    index = evidence["names"].index(disease)
    views = evidence["views"]
    state = "present" if evidence["present"][index] else "absent"
    maps = evidence["maps"][:, index]
    low, high = float(maps.min()), float(maps.max())
    overlays = [evidence_overlay(view, view_map, (low, high)) for view, view_map in zip(views, maps)]
    if evidence.get("maps_kind") == "attribution":
        meaning = ("Evidence map (how much each spot of the image raises this finding's probability: gradient x "
                   "activation at the image encoder's first layer)")
    else:
        meaning = "Evidence map (per image patch, cosine to the finding's prompt minus cosine to its negation)"
    caption = (f"**{disease}**: probability {evidence['probs'][index]:.2f}, clue injected as *{state}*. "
               f"{meaning}: colours run from {low:+.3f} (clear) to {high:+.3f} (red)"
               + (f", one scale for both views; strongest on the **{VIEW_NAMES[strongest_view(evidence, disease)]}** "
                  "view." if len(views) > 1 else "."))
    if sentence is not None:
        caption += (f"\n\nSentence: \u201c{sentence['text']}\u201d states **{disease}** "
                    f"({sentence['observations'][disease]}).")
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

