"""The study schema every data format is loaded into, its labels, checks and image decoding.

A study split is a ``datasets.Dataset`` whose rows are::

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

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import datasets
import pyarrow.compute as pc
from PIL import Image as PILImage

from trrg.modeling.configuration_trrg import CHEXPERT_OBSERVATIONS
from trrg.modeling.image_processing_trrg import XRayImageError, describe_source, load_xray_image, order_study_views
from trrg.processing.labeler import label_report
from trrg.processing.text import clean_report

logger = logging.getLogger(__name__)

STUDY_COLUMNS = ("id", "images", "report", "labels", "split")
ImageEntry = str | dict  # an absolute path, or {"path": str | None, "bytes": bytes} for in-memory images
LABEL_VALUES = (1, 0, -1)
MAX_LISTED = 5  # problems listed in one error message; the count says how many there are in all


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


def row_labels(raw: Any, report: str, study_id: str, mode: str) -> dict[str, int | None]:
    if mode == "annotation" and raw is not None:
        return parse_labels(raw, study_id)
    return dict(label_report(report))  # no labels in the data (or mode="labeler"): compute them


def check_labels_mode(labels: str) -> None:
    if labels not in ("annotation", "labeler"):
        raise ValueError(f"labels must be 'annotation' or 'labeler'; got {labels!r}.")


# ---------------------------------------------------------------------------------------------
# Rows -> a study split
# ---------------------------------------------------------------------------------------------


def handle_missing_images(rows: list[dict], split: str, on_missing: str, fix: str) -> list[dict]:
    # In-memory images (dicts with bytes) have no file to check.
    missing = [(row["id"], path) for row in rows for path in row["images"] if isinstance(path, str) and not os.path.isfile(path)]
    if not missing:
        return rows
    examples = "; ".join(f"study {study_id!r}: {path}" for study_id, path in missing[:MAX_LISTED])
    if on_missing == "raise":
        raise StudyDataError(
            f"split {split!r}: {len(missing)} image file(s) not found, e.g. {examples}. {fix}"
        )
    bad_ids = {study_id for study_id, _ in missing}
    logger.warning("split %r: skipped %d studies with %d missing image file(s), e.g. %s", split, len(bad_ids), len(missing), examples)
    return [row for row in rows if row["id"] not in bad_ids]


def rows_to_dataset(rows: list[dict]) -> datasets.Dataset:
    in_memory = any(isinstance(image, dict) for row in rows for image in row["images"])
    if in_memory:  # one Arrow type per column: turn paths into dicts too
        rows = [{**row, "images": [i if isinstance(i, dict) else {"path": i, "bytes": None} for i in row["images"]]} for row in rows]
    features = study_features(in_memory_images=in_memory)
    if not rows:  # an empty split ("val": [] in an annotation file): from_list cannot type it
        return datasets.Dataset.from_dict({column: [] for column in STUDY_COLUMNS}, features=features)
    rows = [{column: row[column] for column in STUDY_COLUMNS} for row in rows]  # schema column order
    return datasets.Dataset.from_list(rows, features=features)


# ---------------------------------------------------------------------------------------------
# Decoding for collators, and up-front validation
# ---------------------------------------------------------------------------------------------


class StudyImageReader:
    """Decodes a study row's views with ``load_xray_image`` for a collator, DICOM views in the
    order their tags give (``order_study_views``, frontal first), as the processor orders them at
    inference.

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
        for source in order_study_views(list(study["images"])):  # decoded views carry no tags: order first
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
    """Rows of ``columns``, with ``images`` read as its number of views only: a prepared data set
    stores image bytes in that column, and validation must not read every image."""
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise StudyDataError(f"dataset lacks the study columns {missing}; load it with trrg.processing.studies.load_studies.")
    index = 0
    for batch in dataset.select_columns(list(columns)).with_format("arrow").iter(batch_size=1024):
        values = {column: (pc.list_value_length(batch[column]).fill_null(0) if column == "images" else batch[column])
                  for column in columns}
        for row in zip(*(values[column].to_pylist() for column in columns)):
            yield index, dict(zip(columns, row))
            index += 1


def _row_problems(row: dict) -> list[str]:
    problems = []
    if not row["images"]:
        problems.append("has no images")
    if not clean_report(row["report"] or "").strip(" ."):
        problems.append("report is empty after cleaning")
    return problems


class CachedStudyReader(StudyImageReader):
    """``StudyImageReader`` with a bounded LRU cache of decoded views keyed by study id, and an error
    when no study of a batch can be read (so a batch never silently becomes empty)."""

    def __init__(self, strict: bool = False, max_cached_studies: int = 20000):
        super().__init__(strict=strict)
        self.max_cached_studies = max_cached_studies
        self._cache: OrderedDict[str, list] = OrderedDict()

    def read(self, study: Mapping):
        key = study["id"]
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        views = super().read(study)
        if views is not None and self.max_cached_studies > 0:
            self._cache[key] = views
            if len(self._cache) > self.max_cached_studies:
                self._cache.popitem(last=False)
        return views

    def read_batch(self, rows: Sequence[Mapping]) -> tuple[list[Mapping], list[list]]:
        kept, views = super().read_batch(rows)
        if not kept:
            raise RuntimeError(
                f"no image of the {len(rows)} studies in this batch could be read (first id {rows[0]['id']!r}); "
                "see the warnings above for the files and reasons"
            )
        return kept, views
