"""Format ``saved``: a folder written by ``DatasetDict.save_to_disk`` (``trrg prepare`` writes one),
detected by its ``dataset_dict.json`` and read with ``datasets.load_from_disk`` (memory-mapped
Arrow: nothing is decoded or copied until a batch asks for it).

The splits must have the study columns (``STUDY_COLUMNS``); images are ``datasets.Image`` values
with their bytes in the Arrow files (read back undecoded, as ``{"path", "bytes"}`` dicts) or path
strings. ``image_root`` does not apply: the images are inside the folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import datasets

from trrg.processing.studies.schema import STUDY_COLUMNS, StudyDataError, study_features

NAME = "saved"
MARKER = "dataset_dict.json"


def matches(source) -> bool:
    """A folder holding ``dataset_dict.json``."""
    return isinstance(source, (str, os.PathLike)) and (Path(source) / MARKER).is_file()


def load_saved(
    source: str | os.PathLike,
    splits: Iterable[str] | str | None = None,
    image_root: str | os.PathLike | None = None,
) -> datasets.DatasetDict:
    """The study ``DatasetDict`` saved in ``source`` (only ``splits`` when given)."""
    if image_root is not None:
        raise StudyDataError(f"{source}: image_root does not apply to a saved data set (its images are inside "
                             "the folder); drop --image_root.")
    try:
        loaded = datasets.DatasetDict.load_from_disk(str(source))
    except (FileNotFoundError, OSError, ValueError) as error:
        raise StudyDataError(f"{source}: not a readable save_to_disk folder ({error}). Write it again with "
                             "trrg prepare.") from error
    wanted = list(loaded) if splits is None else [splits] if isinstance(splits, str) else list(splits)
    missing = [name for name in wanted if name not in loaded]
    if missing:
        raise StudyDataError(f"{source}: no split named {missing}; it has {list(loaded)}.")
    return datasets.DatasetDict({name: _as_studies(loaded[name], source, name) for name in wanted})


def _as_studies(dataset: datasets.Dataset, source, split: str) -> datasets.Dataset:
    """The split with the study columns in schema order, images undecoded; raises on another schema."""
    missing = [column for column in STUDY_COLUMNS if column not in dataset.column_names]
    if missing:
        raise StudyDataError(f"{source}: split {split!r} lacks the study columns {missing} (it has "
                             f"{dataset.column_names}). Write the folder with trrg prepare, or save a study "
                             "DatasetDict from load_studies.")  # fmt: skip
    dataset = dataset.select_columns(list(STUDY_COLUMNS))
    for in_memory in (True, False):
        expected = study_features(in_memory_images=in_memory)
        if dataset.features == expected:
            return dataset
        if in_memory and dataset.features == datasets.Features({**expected, "images": datasets.List(datasets.Image())}):
            return dataset.cast(expected)  # decode=True when saved: cast to undecoded {"path", "bytes"}
    raise StudyDataError(f"{source}: split {split!r} has features {dataset.features}, not the study schema "
                         f"{study_features(in_memory_images=True)}. Write the folder with trrg prepare.")
