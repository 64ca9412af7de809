"""Studies from any supported source, through one function: ``load_studies(source)``.

Each data format is one module of this folder with ``NAME``, ``matches(source) -> bool`` and a
loader returning a study ``DatasetDict`` (schema: ``trrg.processing.studies.schema``), registered
once below with ``register_format``. ``load_studies`` asks the formats in order and validates what
the first match loads, so every command and trainer reads data the same way, and names it
(``Dataset.info.dataset_name``, never a path: ``provenance``) so a trainer can record what it read.

Adding a format: write ``processing/studies/<name>.py`` with ``NAME``, ``matches`` and a loader,
and add one ``register_format`` line here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets

from trrg.processing.studies import r2gen, records, saved
from trrg.processing.studies.provenance import PHANTOM_NAME, data_set_name, is_phantom, name_studies, recorded_name
from trrg.processing.studies.r2gen import load_r2gen
from trrg.processing.studies.records import load_records
from trrg.processing.studies.schema import (
    STUDY_COLUMNS,
    StudyDataError,
    StudyImageReader,
    parse_labels,
    study_features,
    validate_studies,
)

MAX_PROBLEMS_SHOWN = 20


@dataclass(frozen=True)
class StudyFormat:
    """A data format: its name, a test whether a source is in it, and its loader. The loader takes
    the source and keyword options (``image_root``, ``splits``, ``labels``, ...)."""

    name: str
    matches: Callable[[object], bool]
    load: Callable[..., datasets.DatasetDict]


FORMATS: list[StudyFormat] = []


def register_format(study_format: StudyFormat) -> None:
    """Add a format; formats are tried in registration order, the most specific first."""
    FORMATS.append(study_format)


register_format(StudyFormat(r2gen.NAME, r2gen.matches, load_r2gen))  # before records: both read .json
register_format(StudyFormat(saved.NAME, saved.matches, saved.load_saved))  # before records: both read folders
register_format(StudyFormat(records.NAME, records.matches, load_records))


def resolve_source(source):
    """A folder holding R2Gen's ``annotation.json`` stands for that file; other sources as given."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir() and (path / "annotation.json").is_file():
            return path / "annotation.json"
        if not path.exists():
            raise StudyDataError(f"{source}: no such file or folder. Pass an R2Gen annotation.json (or its folder), "
                                 "a JSON/JSONL file of studies or an imagefolder with metadata.jsonl.")
    return source


def format_of(source) -> StudyFormat:
    for study_format in FORMATS:
        if study_format.matches(source):
            return study_format
    known = ", ".join(f.name for f in FORMATS)
    raise StudyDataError(f"{source}: not a data set of a known format ({known}). Pass an R2Gen annotation.json, "
                         "a JSON/JSONL file of studies, an imagefolder or a datasets.Dataset/DatasetDict.")


def load_studies(source, **options) -> datasets.DatasetDict:
    """The studies of ``source`` (a path or a ``datasets`` object), validated.

    ``options`` go to the format's loader: ``image_root`` (folder that relative image paths resolve
    against), ``splits`` (R2Gen) / ``split`` (records), ``labels`` ("annotation" or "labeler"), ...
    Every split's ``info.dataset_name`` names the data set, never by its path ("phantom", "dicom data
    set 3f2a9c1e", "r2gen data set 91c0e6b2": ``data_name``). Raises ``StudyDataError`` naming the
    source, the rows and the fix.
    """
    source = resolve_source(source)
    options = {key: value for key, value in options.items() if value is not None}
    study_format = format_of(source)
    studies = study_format.load(source, **options)
    problems = validate_studies(studies)
    if problems:
        shown = "\n  ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = f"\n  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more" if len(problems) > MAX_PROBLEMS_SHOWN else ""
        raise StudyDataError(f"{source}: {len(problems)} problem(s); fix or remove these rows:\n  {shown}{more}")
    return name_studies(studies, data_name(source, study_format, studies))


def data_name(source, study_format: StudyFormat, studies: datasets.DatasetDict) -> str:
    """What ``load_studies`` names the studies of ``source``: "phantom" for the phantom; the name a
    saved folder recorded (``trrg prepare`` records one); else the format and a content fingerprint
    of the studies loaded."""
    if is_phantom(source):
        return PHANTOM_NAME
    if study_format.name == saved.NAME and recorded_name(studies):
        return recorded_name(studies)
    return data_set_name(study_format.name, studies)


__all__ = [
    "FORMATS",
    "STUDY_COLUMNS",
    "StudyDataError",
    "StudyFormat",
    "StudyImageReader",
    "data_name",
    "format_of",
    "load_r2gen",
    "load_records",
    "load_studies",
    "parse_labels",
    "register_format",
    "study_features",
    "validate_studies",
]
