"""Study records read through ``datasets``: an imagefolder (images plus ``metadata.jsonl``/``.csv``),
a JSON/JSONL file of records, or an in-memory ``Dataset``/``DatasetDict``.

Columns: ``images`` (a list of views) or ``image`` (one view; ``file_name``/``file_names`` in an
imagefolder's metadata), ``report``, ``id`` (optional), ``labels`` (optional: a dict or a list of
14 in CheXpert order; without it the labeler labels the report). Relative image paths resolve
against the file's folder (the imagefolder itself), or ``image_root`` when given.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import datasets
from PIL import Image as PILImage

from trrg.modeling.image_processing_trrg import describe_source
from trrg.processing.studies.schema import (
    ImageEntry,
    StudyDataError,
    check_labels_mode,
    handle_missing_images,
    row_labels,
    rows_to_dataset,
)

NAME = "records"
SPLIT_COLUMN = "split"


def matches(source) -> bool:
    """A ``Dataset``/``DatasetDict``, a folder, or a ``.json``/``.jsonl`` file."""
    if isinstance(source, (datasets.Dataset, datasets.DatasetDict, datasets.IterableDataset,
                           datasets.IterableDatasetDict)):
        return True
    path = Path(source)
    return path.is_dir() or (path.is_file() and path.suffix.lower() in (".json", ".jsonl"))


def load_records(
    source: str | os.PathLike | datasets.Dataset | datasets.DatasetDict,
    image_column: str | None = None,
    report_column: str = "report",
    id_column: str = "id",
    splits: Iterable[str] | str | None = None,
    study_column: str | None = None,
    labels_column: str = "labels",
    labels: Literal["annotation", "labeler"] = "annotation",
    check_images: bool = True,
    image_root: str | os.PathLike | None = None,
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
        splits: keep only these splits (a name or a list; a lone ``Dataset`` is given the one name,
            default "train").
        study_column: group rows (one view each) sharing this column's value into one study, in row
            order; e.g. "study_id" for MIMIC-style one-image-per-row metadata.
        labels_column: a dict or list-of-14 label column; without it the labeler labels the report.
        labels: "annotation" (use ``labels_column`` when present) or "labeler" (always compute).
        check_images: raise if a referenced image file does not exist.
        image_root: folder relative image paths resolve against (default: the file's folder, the
            imagefolder itself, or the working directory for an in-memory dataset).
        cache_dir: ``datasets`` cache for the folder/JSON builders.
    """
    check_labels_mode(labels)
    dataset_dict, base_dir = _load_source(source, splits, cache_dir)
    if image_root is not None:
        base_dir = Path(image_root).absolute()
    columns = {"image": image_column, "report": report_column, "id": id_column, "study": study_column,
               "labels": labels_column}  # fmt: skip
    result = {}
    for name, dataset in dataset_dict.items():
        rows = _study_rows(dataset, name, columns, base_dir, labels)
        if check_images:
            handle_missing_images(rows, name, "raise", _resolution_note(source, base_dir, image_root))
        result[name] = rows_to_dataset(rows)
    return datasets.DatasetDict(result)


def _load_source(source, splits, cache_dir) -> tuple[datasets.DatasetDict, Path]:
    """Any supported source -> (DatasetDict, folder that relative image paths are resolved against)."""
    if isinstance(source, datasets.Dataset):
        if SPLIT_COLUMN in source.column_names:  # the rows say their split: honour it
            return _only_splits(_split_by_column(datasets.DatasetDict({"train": source}), "the Dataset"), splits,
                                "the Dataset"), Path.cwd()
        return datasets.DatasetDict({_lone_split_name(splits): source}), Path.cwd()
    if isinstance(source, datasets.DatasetDict):
        return _only_splits(_split_by_column(source, "the DatasetDict"), splits, "the DatasetDict"), Path.cwd()
    if isinstance(source, datasets.IterableDataset | datasets.IterableDatasetDict):
        raise StudyDataError("streaming datasets are not supported: load the dataset without streaming=True.")
    path = Path(source)
    cache = str(cache_dir) if cache_dir is not None else None
    if path.is_dir():
        loaded = _split_by_column(datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=cache), str(path))
        return _only_splits(loaded, splits, str(path)), path.absolute()
    if path.is_file() and path.suffix.lower() in (".json", ".jsonl"):
        loaded = _split_by_column(datasets.load_dataset("json", data_files=str(path), cache_dir=cache), str(path))
        return _only_splits(loaded, splits, str(path)), path.parent.absolute()
    raise StudyDataError(
        f"{source}: not a folder or a .json/.jsonl file. Pass an imagefolder directory, a JSON(L) file, or a "
        "datasets.Dataset/DatasetDict (an R2Gen annotation.json is read by trrg.processing.studies.r2gen)."
    )


def _resolution_note(source, base_dir: Path, image_root) -> str:
    """Where relative image paths were looked for, for the missing-image error."""
    if image_root is None and not isinstance(source, (datasets.Dataset, datasets.DatasetDict)) and Path(source).is_dir():
        # datasets resolves an imagefolder's file names itself: against the folder of the metadata
        # file that lists them (a split's sub-folder), not the data set's root.
        return (f"An imagefolder's file names are resolved against the folder of the metadata file that lists "
                f"them (under {base_dir}).")
    return f"Relative image paths are resolved against {base_dir}."


def _split_by_column(dataset_dict: datasets.DatasetDict, source: str) -> datasets.DatasetDict:
    """Rows that carry a ``split`` column are put in the split it names: a file holding every study
    is split by it (``datasets`` loads a single file as one "train" split). Where the source already
    has several splits, a row whose column names another split is an error, never rewritten."""
    result: dict[str, list[datasets.Dataset]] = {}
    for name, dataset in dataset_dict.items():
        if SPLIT_COLUMN not in dataset.column_names:
            result.setdefault(name, []).append(dataset)
            continue
        values = dataset[SPLIT_COLUMN]
        unnamed = [index for index, value in enumerate(values) if not isinstance(value, str) or not value.strip()]
        if unnamed:
            raise StudyDataError(f"{source}: row {unnamed[0]} of split {name!r} has no value in its 'split' column "
                                 f"({len(unnamed)} such rows); give every row its split or drop the column.")
        others = sorted(set(values) - {name})
        if len(dataset_dict) > 1 and others:
            raise StudyDataError(f"{source}: split {name!r} holds rows whose 'split' column says {others}; the folder "
                                 "or file layout and the column must agree.")
        for value in sorted(set(values)):
            result.setdefault(value, []).append(dataset.select([i for i, v in enumerate(values) if v == value]))
    return datasets.DatasetDict({name: parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
                                 for name, parts in result.items()})


def _wanted(splits) -> list[str] | None:
    return None if splits is None else [splits] if isinstance(splits, str) else list(splits)


def _lone_split_name(splits) -> str:
    wanted = _wanted(splits)
    if wanted is not None and len(wanted) != 1:
        raise StudyDataError(f"a lone Dataset is one split: pass one split name, not {wanted}.")
    return wanted[0] if wanted else "train"


def _only_splits(dataset_dict: datasets.DatasetDict, splits, source: str) -> datasets.DatasetDict:
    wanted = _wanted(splits)
    if wanted is None:
        return dataset_dict
    missing = [name for name in wanted if name not in dataset_dict]
    if missing:
        raise StudyDataError(f"{source}: no split named {missing}; it has {list(dataset_dict)}.")
    return datasets.DatasetDict({name: dataset_dict[name] for name in wanted})


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


def _study_rows(dataset: datasets.Dataset, split: str, columns: dict, base_dir: Path, labels: str) -> list[dict]:
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
        row["labels"] = row_labels(row.pop("raw_labels"), row["report"], row["id"], labels)
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
