"""R2Gen ``annotation.json`` (IU-Xray, MIMIC-CXR as R2Gen ships them, ``trrg phantom``).

    {"train": [{"id", "report", "image_path": [relative paths], "split"?, "labels"?}, ...], "val": [...], "test": [...]}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import datasets

from trrg.processing.studies.schema import (
    StudyDataError,
    check_labels_mode,
    handle_missing_images,
    row_labels,
    rows_to_dataset,
)

NAME = "r2gen"


def matches(source) -> bool:
    """An ``annotation.json``, or any ``.json`` file holding one object (R2Gen's split -> entries)."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    path = Path(source)
    if not path.is_file() or path.suffix.lower() != ".json":
        return False
    if path.name == "annotation.json":
        return True
    with open(path, encoding="utf-8") as handle:
        return handle.read(64).lstrip().startswith("{")


def load_r2gen(
    annotation_path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    splits: Iterable[str] | None = None,
    check_images: bool = True,
    labels: Literal["annotation", "labeler"] = "annotation",
    on_missing: Literal["raise", "skip"] = "raise",
) -> datasets.DatasetDict:
    """Load an R2Gen ``annotation.json`` (IU-Xray, MIMIC-CXR, ``trrg phantom``) as studies.

    Args:
        annotation_path: ``{"train": [...], "val": [...], "test": [...]}`` with entries
            ``{"id", "report", "image_path": [relative paths], "split"?, "labels"?}``.
        image_root: folder the ``image_path`` entries are relative to; defaults to
            ``<annotation folder>/images`` as R2Gen lays data out.
        splits: split names to load (default: all in the file).
        check_images: check up front that every image file exists.
        labels: "annotation" uses an entry's ``labels`` when present and the labeler otherwise;
            "labeler" always labels the report text.
        on_missing: with ``check_images``, "raise" on missing files (naming study id and path) or
            "skip" the studies that miss any, with a warning giving the count.
    """
    check_labels_mode(labels)
    if on_missing not in ("raise", "skip"):
        raise ValueError(f"on_missing must be 'raise' or 'skip'; got {on_missing!r}.")
    annotation_path = Path(annotation_path)
    annotation = read_annotation(annotation_path)
    image_root = Path(image_root) if image_root is not None else annotation_path.parent / "images"
    split_names = _select_splits(list(annotation), splits, str(annotation_path))
    result = {}
    for split in split_names:
        rows = [_r2gen_row(entry, index, split, image_root, labels, annotation_path) for index, entry in enumerate(annotation[split])]
        if check_images:
            fix = f"Check image_root (now {image_root}) or pass on_missing='skip' to drop those studies."
            rows = handle_missing_images(rows, split, on_missing, fix)
        result[split] = rows_to_dataset(rows)
    return datasets.DatasetDict(result)


def read_annotation(path: Path) -> dict[str, list]:
    if not path.is_file():
        raise StudyDataError(f"{path}: annotation file not found. Pass the path of R2Gen's annotation.json.")
    try:
        annotation = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise StudyDataError(f"{path}: not valid JSON ({error}). Re-create the annotation file.") from error
    if not isinstance(annotation, dict) or not all(isinstance(v, list) for v in annotation.values()):
        raise StudyDataError(
            f"{path}: expected R2Gen's layout {{'train': [...], 'val': [...], 'test': [...]}} (split -> list of entries)."
        )
    return annotation


def _select_splits(available: list[str], wanted: Iterable[str] | None, source: str) -> list[str]:
    if wanted is None:
        return available
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    missing = [name for name in wanted if name not in available]
    if missing:
        raise StudyDataError(f"{source}: no split named {missing}; it has {available}.")
    return wanted


def _r2gen_row(entry: Any, index: int, split: str, image_root: Path, labels: str, path: Path) -> dict:
    where = f"{path}, split {split!r}, entry {index}"
    if not isinstance(entry, dict):
        raise StudyDataError(f"{where}: entry is a {type(entry).__name__}, expected a dict with id/report/image_path.")
    missing = [key for key in ("id", "report", "image_path") if key not in entry]
    if missing:
        raise StudyDataError(f"{where}: entry lacks {missing}. R2Gen entries have 'id', 'report' and 'image_path'.")
    study_id = str(entry["id"])
    image_paths = entry["image_path"] if isinstance(entry["image_path"], list) else [entry["image_path"]]
    report = str(entry["report"] or "")
    return {
        "id": study_id,
        "images": [str((image_root / str(p)).absolute()) for p in image_paths],
        "report": report,
        "labels": row_labels(entry.get("labels"), report, study_id, labels),
        "split": split,
    }
