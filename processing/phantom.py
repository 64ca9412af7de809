"""``trrg phantom``: a deterministic synthetic chest X-ray data set that makes TRRG testable on a CPU.

Each study has a frontal (PA) and, for ``lateral_fraction`` of the studies, a lateral view (8-bit
grayscale PNG), a report in radiology phrasing, and the 14 CheXpert labels that the report states.
Findings (cardiomegaly, effusion, pneumothorax, airspace disease, edema, atelectasis, nodules, rib
fractures, pleural thickening, devices, ...) are drawn visibly with laterality and severity, at
imbalanced prevalence (about half the studies are normal; pneumothorax and fracture are rare).
Every label is decidable from the pixels: airspace disease, for one, is drawn as one of three kinds
that look different (faint ground glass -> "opacity", dense lobar consolidation -> "consolidation",
patchy multifocal consolidation -> "pneumonia"), and the report's wording follows the kind.

Output, R2Gen format::

    DIR/annotation.json   {"train": [...], "val": [...], "test": [...]}, entries
                          {"id", "report", "image_path": ["<id>/0.png", "<id>/1.png"], "split", "labels"}
    DIR/images/<id>/0.png frontal, 1.png lateral
    DIR/phantom_meta.json arguments, seed, version and each study's drawn findings, anatomy and
                          finding regions

Where each finding is drawn (for scoring localisation, e.g. the pointing game) is recorded in
``phantom_meta.json`` (since version 1.2), next to the findings and anatomy of each study::

    {"version": "1.3", "arguments": {...}, "studies": {"<id>": {"findings": {...}, "anatomy": {...},
        "regions": {"0": {"Pleural Effusion": [[20, 78, 63, 98], [73, 76, 113, 98]],
                          "Support Devices": [[62, 0, 68, 41]]},
                    "1": {"Pleural Effusion": [[59, 76, 110, 103]], "Support Devices": [[66, 0, 74, 42]]}}}}}

(a bilateral effusion and an ET tube at 128 px: one box per side on the frontal view, one on the
lateral, where both sides overlap).

``regions[view]`` (view "0" frontal, "1" lateral; the lateral key is absent for frontal-only
studies) maps each CheXpert observation drawn in that view to a list of boxes ``[x0, y0, x1, y1]``
in pixels of the saved image (x = column, y = row; inclusive-exclusive): one box per place it is
drawn (each side of a bilateral effusion, atelectasis or edema on the frontal view, each focus of
multifocal airspace disease, each support device), each the bounding box of the pixels the finding
changes by at least ``phantom_render.REGION_MIN_CHANGE`` grey levels. Global findings get the box of
what is drawn (cardiomegaly: the heart; enlarged cardiomediastinum: the mediastinum; edema: the
lungs' haze). The observation names follow the report's labels: airspace disease is "Lung Opacity"
(ground glass), "Consolidation" (lobar) or "Consolidation" and "Pneumonia" (multifocal), pleural
thickening is "Pleural Other". Uncertain (hedged) findings are drawn too, so they have regions. Read
them with ``finding_regions(meta, study_id)`` (int view keys).

Study ``i`` uses its own generator seeded from ``(seed, i)``, so studies can be made in any order
or in parallel and the output is byte-identical for the same arguments.

    trrg phantom --out data/phantom --seed 0
    python -m trrg.processing.phantom --out data/phantom --num-train 300 --num-test 100
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .phantom_render import render_frontal, render_lateral, sample_anatomy
from .phantom_reports import AIRSPACE_LABELS, FINDING_NAMES, Findings, sample_findings, write_report

# 1.2: finding regions in phantom_meta.json; curved ribs; pneumothorax, fracture, central line,
# pacemaker leads and pleural thickening on the lateral view (images change, reports do not).
# 1.3: a fracture draws a dense spot at the break on both views, so that it can be seen at 128 px
# (docs/decidability; images of studies with a fracture change, reports do not).
PHANTOM_VERSION = "1.3"
MIN_IMAGE_SIZE = 32
SPLITS = ("train", "val", "test")
META_FILE, ANNOTATION_FILE = "phantom_meta.json", "annotation.json"
# The CheXpert observation(s) each finding's report sentence states (airspace: by kind, below).
FINDING_OBSERVATIONS = {
    "cardiomegaly": ("Cardiomegaly",),
    "enlarged_cardiomediastinum": ("Enlarged Cardiomediastinum",),
    "pleural_effusion": ("Pleural Effusion",),
    "pneumothorax": ("Pneumothorax",),
    "edema": ("Edema",),
    "atelectasis": ("Atelectasis",),
    "lung_lesion": ("Lung Lesion",),
    "fracture": ("Fracture",),
    "pleural_thickening": ("Pleural Other",),
    "support_devices": ("Support Devices",),
}


def finding_observations(name: str, attrs: dict[str, Any]) -> tuple[str, ...]:
    """The CheXpert observations a drawn finding is labelled with (airspace disease: by its kind)."""
    if name == "airspace":
        return tuple(AIRSPACE_LABELS[attrs["kind"]])
    return FINDING_OBSERVATIONS[name]


def _observation_regions(findings: Findings, boxes: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
    """Finding-name boxes from the renderer, keyed by CheXpert observation instead."""
    regions: dict[str, list[list[int]]] = {}
    for name, found in boxes.items():
        for observation in finding_observations(name, findings[name]):
            regions.setdefault(observation, []).extend(found)
    return regions


def finding_regions(meta: dict[str, Any] | str | Path, study_id: str) -> dict[int, dict[str, list[list[int]]]]:
    """Where the findings of study ``study_id`` are drawn: ``{view index: {observation: [[x0, y0, x1,
    y1], ...]}}`` in pixels of the saved image (view 0 frontal, 1 lateral; boxes inclusive-exclusive).

    Args:
        meta: the parsed ``phantom_meta.json``, its path, or the phantom folder.
        study_id: e.g. ``"phantom_000012"``.

    A finding that is drawn but too faint to change any pixel by ``REGION_MIN_CHANGE`` grey levels in
    a view has no entry there; a normal study gives ``{0: {}, 1: {}}``.
    """
    if not isinstance(meta, dict):
        path = Path(meta)
        meta = json.loads((path / META_FILE if path.is_dir() else path).read_text())
    try:
        study = meta["studies"][study_id]
    except KeyError:
        raise KeyError(f"study {study_id!r} is not in this phantom_meta.json") from None
    if "regions" not in study:
        raise ValueError(
            f"phantom_meta.json version {meta.get('version')!r} has no finding regions (added in 1.2): "
            "regenerate the phantom with this version (trrg phantom --out DIR --overwrite)"
        )
    return {
        int(view): {name: [list(box) for box in boxes] for name, boxes in found.items()}
        for view, found in study["regions"].items()
    }


def _rngs(rng_or_seed: np.random.Generator | int | tuple[int, ...]) -> dict[str, np.random.Generator]:
    """Independent streams for anatomy, findings and wording, so that overriding the findings of a
    study leaves its anatomy (and noise) unchanged."""
    if isinstance(rng_or_seed, np.random.Generator):
        entropy = rng_or_seed.integers(2**63, size=2).tolist()
    else:
        entropy = list(rng_or_seed) if isinstance(rng_or_seed, tuple) else [int(rng_or_seed)]
    streams = np.random.SeedSequence(entropy).spawn(3)
    return dict(zip(("anatomy", "findings", "report"), map(np.random.default_rng, streams), strict=True))


def sample_study(
    rng_or_seed: np.random.Generator | int | tuple[int, ...],
    image_size: int = 128,
    *,
    lateral: bool = True,
    findings: Findings | None = None,
) -> tuple[list[np.ndarray], str, dict[str, int | None], dict[str, Any]]:
    """Make one study in memory.

    Args:
        rng_or_seed: a generator, an int seed or a tuple of ints (``(seed, study_index)``).
        image_size: side of the square images in pixels (>= 32).
        lateral: also render the lateral view.
        findings: use these findings instead of drawing them (``{}`` for a normal study, or e.g.
            ``{"pleural_effusion": {"side": "left", "size": "large", "certainty": "positive"}}``);
            the anatomy and noise stay those of the seed, so images with and without a finding can
            be compared pixel by pixel.

    Returns:
        ``(images, report, labels, attributes)``: uint8 arrays (frontal first), the report, the
        CheXpert labels the report states, and ``{"findings", "anatomy", "regions"}`` as drawn
        (``regions``: ``{"0": {observation: [[x0, y0, x1, y1], ...]}, "1": {...}}``, string view
        keys as in ``phantom_meta.json``; see the module docstring).
    """
    _check_image_size(image_size)
    unknown = sorted(set(findings or {}) - set(FINDING_NAMES))
    if unknown:
        raise ValueError(f"findings has unknown names {unknown}: use names from {FINDING_NAMES}")
    rngs = _rngs(rng_or_seed)
    anatomy = sample_anatomy(rngs["anatomy"])
    drawn = sample_findings(rngs["findings"])
    findings = drawn if findings is None else findings
    report, labels = write_report(rngs["report"], findings)
    images, regions = [], {}
    for view, render in enumerate((render_frontal, render_lateral)[: 1 + bool(lateral)]):
        boxes: dict[str, list[list[int]]] = {}
        images.append(render(anatomy, findings, image_size, boxes))
        regions[str(view)] = _observation_regions(findings, boxes)
    return images, report, labels, {"findings": findings, "anatomy": anatomy, "regions": regions}


# --------------------------------------------------------------------------------------------
# Writing a data set
# --------------------------------------------------------------------------------------------


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size (--image-size) must be an integer >= {MIN_IMAGE_SIZE} (got {image_size!r}): "
            "findings such as small nodules are not drawable below that; use e.g. --image-size 128"
        )


def _check_arguments(
    num_train: int, num_val: int, num_test: int, image_size: int, lateral_fraction: float, num_workers: int
) -> None:
    for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
        if not isinstance(value, int) or value < 0:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{name} ({flag}) must be a non-negative integer (got {value!r})")
    if num_train + num_val + num_test == 0:
        raise ValueError("num_train + num_val + num_test is 0: ask for at least one study")
    _check_image_size(image_size)
    if not 0.0 <= lateral_fraction <= 1.0:
        raise ValueError(f"lateral_fraction (--lateral-fraction) must be in [0, 1] (got {lateral_fraction!r})")
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers (--num-workers) must be an integer >= 1 (got {num_workers!r})")


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse to write into a non-empty folder unless it is an earlier phantom or ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a folder: choose another path")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (overwrite or (out_dir / META_FILE).is_file()):
            raise FileExistsError(
                f"{out_dir} is not empty and is not a phantom output (no {META_FILE}): "
                "choose an empty or new folder, or pass --overwrite (overwrite=True) to replace it"
            )
        for stale in (out_dir / "images", out_dir / ANNOTATION_FILE, out_dir / META_FILE):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
    (out_dir / "images").mkdir(parents=True, exist_ok=True)


def _study_ids(num_train: int, num_val: int, num_test: int) -> list[tuple[int, str, str]]:
    """(index, split, id) of every study, indices running through train, val, test."""
    counts = dict(zip(SPLITS, (num_train, num_val, num_test), strict=True))
    rows, index = [], 0
    for split in SPLITS:
        for _ in range(counts[split]):
            rows.append((index, split, f"phantom_{index:06d}"))
            index += 1
    return rows


def _has_lateral(seed: int, index: int, lateral_fraction: float) -> bool:
    # A separate stream: changing the fraction never changes a study's findings or images.
    return bool(np.random.default_rng([seed, index, 1]).random() < lateral_fraction)


def _make_and_save(job: tuple[Path, int, int, str, str, int, float]) -> dict[str, Any]:
    """Make study ``index`` and write its PNGs; returns its annotation entry and attributes."""
    out_dir, seed, index, split, study_id, image_size, lateral_fraction = job
    lateral = _has_lateral(seed, index, lateral_fraction)
    images, report, labels, attributes = sample_study((seed, index), image_size, lateral=lateral)
    folder = out_dir / "images" / study_id
    folder.mkdir(parents=True, exist_ok=True)
    for view, pixels in enumerate(images):
        Image.fromarray(pixels, mode="L").save(folder / f"{view}.png", optimize=False)
    paths = [f"{study_id}/{view}.png" for view in range(len(images))]
    entry = {"id": study_id, "report": report, "image_path": paths, "split": split, "labels": labels}
    return {"entry": entry, "attributes": attributes}


def generate_phantom(
    out_dir: str | Path,
    *,
    num_train: int = 3000,
    num_val: int = 300,
    num_test: int = 1000,
    image_size: int = 128,
    seed: int = 0,
    lateral_fraction: float = 1.0,
    num_workers: int = 1,
    overwrite: bool = False,
) -> Path:
    """Write the phantom data set to ``out_dir``; returns the path of ``annotation.json``."""
    _check_arguments(num_train, num_val, num_test, image_size, lateral_fraction, num_workers)
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    jobs = [
        (out_dir, seed, i, split, sid, image_size, lateral_fraction)
        for i, split, sid in _study_ids(num_train, num_val, num_test)
    ]
    if num_workers == 1:
        results = list(map(_make_and_save, jobs))
    else:  # results come back in job order, so the output does not depend on num_workers
        # fork (where available) spares each worker re-importing transformers for the label names.
        start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(start_method).Pool(num_workers) as pool:
            results = pool.map(_make_and_save, jobs, chunksize=max(1, len(jobs) // (8 * num_workers)))
    annotation = {split: [r["entry"] for r in results if r["entry"]["split"] == split] for split in SPLITS}
    arguments = {
        "num_train": num_train,
        "num_val": num_val,
        "num_test": num_test,
        "image_size": image_size,
        "seed": seed,
        "lateral_fraction": lateral_fraction,
    }
    meta = {
        "version": PHANTOM_VERSION,
        "arguments": arguments,
        "studies": {r["entry"]["id"]: r["attributes"] for r in results},
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
    annotation_path = out_dir / ANNOTATION_FILE
    annotation_path.write_text(json.dumps(annotation, indent=1))
    return annotation_path
