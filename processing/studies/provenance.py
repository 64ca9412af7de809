"""The name of a loaded data set, so a trainer can record what it trained on without a path.

``load_studies`` sets every split's ``Dataset.info.dataset_name`` (kept by ``select``, ``filter``,
``map``, ``save_to_disk`` and ``load_from_disk``):

* "phantom" for the project's synthetic phantom (its folder holds ``phantom_meta.json``);
* the name a folder recorded when it was written (``trrg prepare`` records "dicom data set
  3f2a9c1e", the source kind and the fingerprint of what it wrote; a ``DatasetDict`` from
  ``load_studies`` saved with ``save_to_disk`` keeps its name);
* else "<format> data set <fingerprint>" ("r2gen data set 91c0e6b2"): ``content_fingerprint`` of
  the studies loaded.

Never a path, nor a name ``datasets`` made from one: ``load_dataset`` names a local folder after
it, and a folder's name may name a hospital. Only names of the forms above are kept.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import datasets

PHANTOM_NAME = "phantom"
PHANTOM_MARKER = "phantom_meta.json"
FINGERPRINT_LENGTH = 8  # hex digits: enough to tell a site's data sets apart, too short to mean anything
OUR_NAME = re.compile(rf"^(?:{PHANTOM_NAME}|[a-z0-9]+ data set [0-9a-f]{{{FINGERPRINT_LENGTH}}})$")


def content_fingerprint(studies: datasets.DatasetDict) -> str:
    """A short hash of every study's split, id and report: the same studies give the same
    fingerprint whatever their row order or storage; another report, id or split gives another."""
    rows = []
    for split in sorted(studies):
        for batch in studies[split].select_columns(["id", "report"]).iter(batch_size=4096):
            rows += [hashlib.sha256(f"{split}\0{study_id}\0{report}".encode()).digest()[:16]
                     for study_id, report in zip(batch["id"], batch["report"])]  # fmt: skip
    return hashlib.sha256(b"".join(sorted(rows))).hexdigest()[:FINGERPRINT_LENGTH]


def data_set_name(kind: str, studies: datasets.DatasetDict) -> str:
    """"<kind> data set <fingerprint>", e.g. "dicom data set 3f2a9c1e"."""
    return f"{kind} data set {content_fingerprint(studies)}"


def recorded_name(studies: datasets.DatasetDict) -> str | None:
    """The name every split carries, when it is one this module or ``trrg prepare`` wrote."""
    names = {studies[split].info.dataset_name for split in studies}
    name = names.pop() if len(names) == 1 else None
    return name if name and OUR_NAME.match(name) else None


def is_phantom(source) -> bool:
    """A phantom folder (or a file in it): it holds ``phantom_meta.json``."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    return (folder / PHANTOM_MARKER).is_file()


def name_studies(studies: datasets.DatasetDict, name: str) -> datasets.DatasetDict:
    """Set ``info.dataset_name`` of every split to ``name`` (in place; returns ``studies``)."""
    for split in studies:
        studies[split].info.dataset_name = name
    return studies
