"""Study loaders: R2Gen annotations and Hugging Face datasets -> one study schema.

Every loader returns a ``datasets.DatasetDict`` whose rows are studies::

    {"id": str, "images": [str, ...], "report": str, "labels": {observation: int | None}, "split": str}

* ``images`` are absolute paths, decoded lazily by the collator (``StudyImageReader``) with
  ``load_xray_image``. Images that exist only in memory (a ``Dataset`` whose image column holds
  decoded or byte images without a file behind them) are kept as ``{"path": str | None, "bytes":
  bytes}`` dicts instead; ``load_xray_image`` accepts both forms. A split uses one form for all
  its rows, because an Arrow column has one type.
* ``labels`` has all 14 ``CHEXPERT_OBSERVATIONS`` keys: 1 positive, 0 negative, -1 uncertain,
  None not mentioned. They come from the data when present, else from ``trrg.processing.labeler``.
* ``split`` is the split name as the source spells it (R2Gen: "train", "val", "test"); the
  ``DatasetDict`` keys are the same names.

``validate_studies`` finds empty studies, empty reports and duplicate ids before training starts.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import datasets
from PIL import Image as PILImage

from trrg.modeling.configuration_trrg import CHEXPERT_OBSERVATIONS
from trrg.modeling.image_processing_trrg import XRayImageError, describe_source, load_xray_image
from trrg.processing.labeler import label_report
from trrg.processing.text import clean_report

logger = logging.getLogger(__name__)

STUDY_COLUMNS = ("id", "images", "report", "labels", "split")
ImageEntry = str | dict  # an absolute path, or {"path": str | None, "bytes": bytes} for in-memory images
LABEL_VALUES = (1, 0, -1)
_MAX_LISTED = 5  # problems listed in one error message; the count says how many there are in all


class StudyDataError(ValueError):
    """A data set does not fit the study schema; the message names the row or file and the fix."""


def study_features(in_memory_images: bool = False) -> datasets.Features:
    """Arrow schema of a study split (labels are nullable int8, one field per observation)."""
    # In-memory views use datasets' own Image feature (undecoded): rows read back as {"path", "bytes"}.
    image = datasets.Image(decode=False) if in_memory_images else datasets.Value("string")
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "images": datasets.List(image),
            "report": datasets.Value("string"),
            "labels": {name: datasets.Value("int8") for name in CHEXPERT_OBSERVATIONS},
            "split": datasets.Value("string"),
        }
    )


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


def parse_label(value: Any, where: str) -> int | None:
    """One label: int, float, None, or the CheXbert CSV string form ("1.0", "0.0", "-1.0", "")."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if value.lower() in ("", "nan", "none", "null"):
            return None
        try:
            value = float(value)
        except ValueError:
            raise StudyDataError(f"{where}: label {value!r} is not a number. Use 1, 0, -1, or empty/None.") from None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value in LABEL_VALUES:
        return int(value)
    raise StudyDataError(f"{where}: label {value!r} is not one of 1, 0, -1 or None.")


def parse_labels(raw: Mapping | list | tuple, study_id: str) -> dict[str, int | None]:
    """A dict keyed by observation (missing keys -> None), or a list of 14 in CheXpert order."""
    if isinstance(raw, (list, tuple)):
        if len(raw) != len(CHEXPERT_OBSERVATIONS):
            raise StudyDataError(
                f"study {study_id!r}: labels list has {len(raw)} values, expected {len(CHEXPERT_OBSERVATIONS)} "
                "in CheXpert order. Give a dict {observation: label} instead."
            )
        raw = dict(zip(CHEXPERT_OBSERVATIONS, raw))
    if not isinstance(raw, Mapping):
        raise StudyDataError(f"study {study_id!r}: labels must be a dict or a list; got {type(raw).__name__}.")
    unknown = sorted(set(raw) - set(CHEXPERT_OBSERVATIONS))
    if unknown:
        raise StudyDataError(
            f"study {study_id!r}: unknown label names {unknown}. Use the CheXpert names: {list(CHEXPERT_OBSERVATIONS)}."
        )
    return {name: parse_label(raw.get(name), f"study {study_id!r}, label {name!r}") for name in CHEXPERT_OBSERVATIONS}


def _row_labels(raw: Any, report: str, study_id: str, mode: str) -> dict[str, int | None]:
    if mode == "annotation" and raw is not None:
        return parse_labels(raw, study_id)
    return dict(label_report(report))  # no labels in the data (or mode="labeler"): compute them


def _check_labels_mode(labels: str) -> None:
    if labels not in ("annotation", "labeler"):
        raise ValueError(f"labels must be 'annotation' or 'labeler'; got {labels!r}.")


# ---------------------------------------------------------------------------------------------
# R2Gen annotation.json
# ---------------------------------------------------------------------------------------------


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
    _check_labels_mode(labels)
    if on_missing not in ("raise", "skip"):
        raise ValueError(f"on_missing must be 'raise' or 'skip'; got {on_missing!r}.")
    annotation_path = Path(annotation_path)
    annotation = _read_annotation(annotation_path)
    image_root = Path(image_root) if image_root is not None else annotation_path.parent / "images"
    split_names = _select_splits(list(annotation), splits, str(annotation_path))
    result = {}
    for split in split_names:
        rows = [_r2gen_row(entry, index, split, image_root, labels, annotation_path) for index, entry in enumerate(annotation[split])]
        if check_images:
            fix = f"Check image_root (now {image_root}) or pass on_missing='skip' to drop those studies."
            rows = _handle_missing_images(rows, split, on_missing, fix)
        result[split] = datasets.Dataset.from_list(rows, features=study_features())
    return datasets.DatasetDict(result)


def _read_annotation(path: Path) -> dict[str, list]:
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
        "labels": _row_labels(entry.get("labels"), report, study_id, labels),
        "split": split,
    }


def _handle_missing_images(rows: list[dict], split: str, on_missing: str, fix: str) -> list[dict]:
    # In-memory images (dicts with bytes) have no file to check.
    missing = [(row["id"], path) for row in rows for path in row["images"] if isinstance(path, str) and not os.path.isfile(path)]
    if not missing:
        return rows
    examples = "; ".join(f"study {study_id!r}: {path}" for study_id, path in missing[:_MAX_LISTED])
    if on_missing == "raise":
        raise StudyDataError(
            f"split {split!r}: {len(missing)} image file(s) not found, e.g. {examples}. {fix}"
        )
    bad_ids = {study_id for study_id, _ in missing}
    logger.warning("split %r: skipped %d studies with %d missing image file(s), e.g. %s", split, len(bad_ids), len(missing), examples)
    return [row for row in rows if row["id"] not in bad_ids]


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets: imagefolder, JSON/JSONL, Dataset / DatasetDict
# ---------------------------------------------------------------------------------------------


def load_hf(
    source: str | os.PathLike | datasets.Dataset | datasets.DatasetDict,
    image_column: str | None = None,
    report_column: str = "report",
    id_column: str = "id",
    split: str | None = None,
    study_column: str | None = None,
    labels_column: str = "labels",
    labels: Literal["annotation", "labeler"] = "annotation",
    check_images: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.DatasetDict:
    """Load studies from Hugging Face ``datasets`` sources.

    Args:
        source: a folder for ``imagefolder`` (images plus ``metadata.jsonl``/``.csv`` with
            ``file_name`` or ``file_names`` and the report), a ``.json``/``.jsonl`` file whose image
            column holds paths relative to the file, or a ``Dataset``/``DatasetDict`` whose image
            column holds ``datasets.Image`` values (files are referenced by path, in-memory images
            are kept as ``{"path", "bytes"}`` dicts; nothing is written to disk).
        image_column: column with one image or a list of views; default "images", else "image".
        report_column, id_column: report text and study id columns (ids default to "<split>-<row>").
        split: keep only this split (a lone ``Dataset`` is given this name, default "train").
        study_column: group rows (one view each) sharing this column's value into one study, in row
            order; e.g. "study_id" for MIMIC-style one-image-per-row metadata.
        labels_column: a dict or list-of-14 label column; without it the labeler labels the report.
        labels: "annotation" (use ``labels_column`` when present) or "labeler" (always compute).
        check_images: raise if a referenced image file does not exist.
        cache_dir: ``datasets`` cache for the folder/JSON builders.
    """
    _check_labels_mode(labels)
    dataset_dict, base_dir = _load_source(source, split, cache_dir)
    columns = {"image": image_column, "report": report_column, "id": id_column, "study": study_column,
               "labels": labels_column}  # fmt: skip
    result = {}
    for name, dataset in dataset_dict.items():
        rows = _hf_rows(dataset, name, columns, base_dir, labels)
        if check_images:
            _handle_missing_images(rows, name, "raise", f"Relative image paths are resolved against {base_dir}.")
        result[name] = _rows_to_dataset(rows)
    return datasets.DatasetDict(result)


def _load_source(source, split: str | None, cache_dir) -> tuple[datasets.DatasetDict, Path]:
    """Any supported source -> (DatasetDict, folder that relative image paths are resolved against)."""
    if isinstance(source, datasets.Dataset):
        return datasets.DatasetDict({split or "train": source}), Path.cwd()
    if isinstance(source, datasets.DatasetDict):
        return _only_split(source, split, "the DatasetDict"), Path.cwd()
    if isinstance(source, datasets.IterableDataset | datasets.IterableDatasetDict):
        raise StudyDataError("streaming datasets are not supported: load the dataset without streaming=True.")
    path = Path(source)
    cache = str(cache_dir) if cache_dir is not None else None
    if path.is_dir():
        loaded = datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=cache)
        return _only_split(loaded, split, str(path)), path.absolute()
    if path.is_file() and path.suffix.lower() in (".json", ".jsonl"):
        loaded = datasets.load_dataset("json", data_files=str(path), cache_dir=cache)
        return _only_split(loaded, split, str(path)), path.parent.absolute()
    raise StudyDataError(
        f"{source}: not a folder or a .json/.jsonl file. Pass an imagefolder directory, a JSON(L) file, or a "
        "datasets.Dataset/DatasetDict (for an R2Gen annotation.json use load_r2gen)."
    )


def _only_split(dataset_dict: datasets.DatasetDict, split: str | None, source: str) -> datasets.DatasetDict:
    if split is None:
        return dataset_dict
    if split not in dataset_dict:
        raise StudyDataError(f"{source}: no split named {split!r}; it has {list(dataset_dict)}.")
    return datasets.DatasetDict({split: dataset_dict[split]})


def _pick_image_column(dataset: datasets.Dataset, image_column: str | None, split: str) -> str:
    candidates = [image_column] if image_column else ["images", "image"]
    for name in candidates:
        if name in dataset.column_names:
            return name
    raise StudyDataError(
        f"split {split!r}: no image column {candidates}; columns are {dataset.column_names}. Pass image_column=."
    )


def _without_decoding(dataset: datasets.Dataset, column: str) -> datasets.Dataset:
    """Cast Image columns to decode=False: we want paths/bytes, not decoded pixels, in the schema."""
    feature = dataset.features[column]
    if isinstance(feature, datasets.Image):
        return dataset.cast_column(column, datasets.Image(decode=False))
    if isinstance(feature, datasets.List) and isinstance(feature.feature, datasets.Image):
        return dataset.cast_column(column, datasets.List(datasets.Image(decode=False)))
    return dataset


def _hf_rows(dataset: datasets.Dataset, split: str, columns: dict, base_dir: Path, labels: str) -> list[dict]:
    image_column = _pick_image_column(dataset, columns["image"], split)
    if columns["report"] not in dataset.column_names:
        raise StudyDataError(
            f"split {split!r}: no report column {columns['report']!r}; columns are {dataset.column_names}. "
            "Pass report_column=."
        )
    wanted = [c for c in (image_column, columns["report"], columns["id"], columns["study"], columns["labels"]) if c in dataset.column_names]
    dataset = _without_decoding(dataset.select_columns(list(dict.fromkeys(wanted))), image_column)
    rows = []
    for index, record in enumerate(dataset):
        views = record[image_column] if isinstance(record[image_column], list) else [record[image_column]]
        study_id = _record_id(record, columns, split, index)
        images = [_image_entry(view, base_dir, f"split {split!r}, row {index} (id {study_id!r})") for view in views]
        rows.append({"id": study_id, "images": images, "report": str(record[columns["report"]] or ""),
                     "raw_labels": record.get(columns["labels"]), "split": split})  # fmt: skip
    if columns["study"]:
        rows = _group_views(rows, split)
    for row in rows:  # label after grouping: one labeler call per study, not per view
        row["labels"] = _row_labels(row.pop("raw_labels"), row["report"], row["id"], labels)
    return rows


def _record_id(record: dict, columns: dict, split: str, index: int) -> str:
    for column in (columns["study"], columns["id"]):
        if column and record.get(column) is not None:
            return str(record[column])
    return f"{split}-{index}"


def _image_entry(value: Any, base_dir: Path, where: str) -> ImageEntry:
    """A path string (resolved against base_dir) or, for in-memory images, a {"path", "bytes"} dict."""
    if isinstance(value, (str, os.PathLike)):
        return str((base_dir / value).absolute())
    if isinstance(value, dict) and value.get("bytes"):
        return {"path": value.get("path"), "bytes": value["bytes"]}
    if isinstance(value, dict) and value.get("path"):
        return str((base_dir / value["path"]).absolute())
    if isinstance(value, PILImage.Image):  # a column that is not a datasets Image feature
        return {"path": getattr(value, "filename", None) or None, "bytes": _png_bytes(value)}
    raise StudyDataError(f"{where}: image value {describe_source(value)} is not a path, an image or {{'path', 'bytes'}}.")


def _png_bytes(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _group_views(rows: list[dict], split: str) -> list[dict]:
    """Merge rows of one study (same id) into one row with all its views, in row order."""
    studies: dict[str, dict] = {}
    for row in rows:
        study = studies.setdefault(row["id"], {**row, "images": []})
        if row["report"] != study["report"]:
            raise StudyDataError(
                f"split {split!r}: study {row['id']!r} has rows with different reports. Rows grouped by "
                "study_column must share one report; check the study ids."
            )
        study["images"].extend(row["images"])
    return list(studies.values())


def _rows_to_dataset(rows: list[dict]) -> datasets.Dataset:
    in_memory = any(isinstance(image, dict) for row in rows for image in row["images"])
    if in_memory:  # one Arrow type per column: turn paths into dicts too
        rows = [{**row, "images": [i if isinstance(i, dict) else {"path": i, "bytes": None} for i in row["images"]]} for row in rows]
    rows = [{column: row[column] for column in STUDY_COLUMNS} for row in rows]  # schema column order
    return datasets.Dataset.from_list(rows, features=study_features(in_memory_images=in_memory))


# ---------------------------------------------------------------------------------------------
# Decoding for collators, and up-front validation
# ---------------------------------------------------------------------------------------------


class StudyImageReader:
    """Decodes a study row's views with ``load_xray_image`` for a collator.

    A view that fails to load is skipped and counted (``skipped_images``) with a warning naming the
    study id, the image and the reason; a study whose every view fails is dropped and counted
    (``dropped_studies``). One bad file among millions therefore never kills a long run, and the
    counters say how much was lost. With ``strict=True`` the first failure raises instead.
    """

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.skipped_images = 0
        self.dropped_studies = 0

    def read(self, study: Mapping) -> list[PILImage.Image] | None:
        """The study's loadable views, or None when none loads (the study is dropped)."""
        views = []
        for source in study["images"]:
            try:
                views.append(load_xray_image(source))
            except XRayImageError as error:
                if self.strict:
                    raise XRayImageError(f"study {study['id']!r}: {error}") from error
                self.skipped_images += 1
                logger.warning("study %r: skipped image %s: %s", study["id"], describe_source(source), error)
        if not views:
            self.dropped_studies += 1
            logger.warning("study %r: dropped, none of its %d image(s) could be loaded", study["id"], len(study["images"]))
            return None
        return views

    def read_batch(self, studies: Iterable[Mapping]) -> tuple[list[Mapping], list[list[PILImage.Image]]]:
        """The studies that kept at least one view, and their views (same order)."""
        kept, views = [], []
        for study in studies:
            study_views = self.read(study)
            if study_views is not None:
                kept.append(study)
                views.append(study_views)
        return kept, views


def validate_studies(dataset: datasets.Dataset | datasets.DatasetDict) -> list[str]:
    """Problems that would waste a training run, one line each with split, row index and id:
    rows without images, reports that are empty after ``clean_report``, duplicate ids (also across
    splits, which would leak test studies into training). An empty list means all is well."""
    splits = dataset.items() if isinstance(dataset, datasets.DatasetDict) else [(None, dataset)]
    problems, first_seen = [], {}
    for split, part in splits:
        for index, row in _iter_rows(part, ("id", "images", "report")):
            where = f"{'' if split is None else f'split {split!r}, '}row {index} (id {row['id']!r})"
            problems.extend(f"{where}: {problem}" for problem in _row_problems(row))
            if row["id"] in first_seen:
                problems.append(f"{where}: duplicate id, first seen at {first_seen[row['id']]}")
            else:
                first_seen[row["id"]] = where.split(" (id")[0]
    return problems


def _iter_rows(dataset: datasets.Dataset, columns: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise StudyDataError(f"dataset lacks the study columns {missing}; load it with load_r2gen or load_hf.")
    index = 0
    for batch in dataset.select_columns(list(columns)).iter(batch_size=1024):
        for values in zip(*(batch[column] for column in columns)):
            yield index, dict(zip(columns, values))
            index += 1


def _row_problems(row: dict) -> list[str]:
    problems = []
    if not row["images"]:
        problems.append("has no images")
    if not clean_report(row["report"] or "").strip(" ."):
        problems.append("report is empty after cleaning")
    return problems


__all__ = [
    "STUDY_COLUMNS",
    "StudyDataError",
    "StudyImageReader",
    "load_hf",
    "load_r2gen",
    "parse_labels",
    "study_features",
    "validate_studies",
]
