"""What every source of ``trrg prepare`` produces before anything is written: the planned studies
(ids, image files, target report, raw labels, patient, split), the tally of what was dropped and
why, and the error type for bad input. Also the small CSV/JSONL readers the sources share."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from trrg.processing.files import ReportFileError, open_text, read_report_records, report_file_suffix


class PrepareError(ValueError):
    """Input that cannot be prepared; the message names the file (and line) and the fix."""


@dataclass(frozen=True)
class PlannedImage:
    """One view: the file it comes from and its file name in the prepared data (a base name:
    ``save_to_disk`` keeps only base names of image paths). ``decode``: store ``load_xray_image``'s
    PNG instead of the file's own bytes (always for DICOM)."""

    file: Path
    name: str
    decode: bool = False


@dataclass
class PlannedStudy:
    id: str
    patient: str
    images: list[PlannedImage]
    report: str
    split: str
    raw_labels: dict | None = None  # {observation: value} from the source, else None (the labeler labels)


@dataclass
class Tally:
    """Studies kept and dropped per reason, and files skipped per reason."""

    dropped: Counter = field(default_factory=Counter)  # reason -> studies
    skipped: Counter = field(default_factory=Counter)  # reason -> files / images
    notes: list[str] = field(default_factory=list)  # one-line remarks printed after the counts

    def drop(self, reason: str, count: int = 1) -> None:
        if count > 0:
            self.dropped[reason] += count

    def skip(self, reason: str, count: int = 1) -> None:
        if count > 0:
            self.skipped[reason] += count


def study_counts(studies: list[PlannedStudy]) -> dict[str, int]:
    return dict(Counter(study.split for study in studies))


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------


def read_csv(path: Path, required: tuple[str, ...], what: str) -> Iterator[tuple[int, dict]]:
    """(line number where the row starts, row) of a CSV (or .csv.gz) that must have the ``required`` columns."""
    if not path.is_file():
        raise PrepareError(f"{path}: {what} not found. Pass its path (see trrg prepare --help).")
    try:
        with open_text(path) as file:
            reader = csv.DictReader(file)
            missing = [column for column in required if column not in (reader.fieldnames or [])]
            if missing:
                raise PrepareError(f"{path}: {what} lacks the column(s) {missing}; its columns are "
                                   f"{reader.fieldnames}. Pass the right file.")
            end = 1
            for row in reader:  # a quoted field may span lines: name the line where the row starts
                start, end = end + 1, reader.line_num
                yield start, row
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise PrepareError(f"{path}: cannot read the {what} ({error}).") from error


def read_report_table(path: Path, key_column: str, report_column: str) -> Iterator[tuple[str, str, str]]:
    """(where, key, report) of a CSV or JSONL (optionally .gz) of reports keyed by ``key_column``; the
    first bad line stops the preparation (a report that cannot be read would silently lose a study)."""
    suffix = report_file_suffix(path)
    if suffix == ".csv":
        for line, row in read_csv(path, (key_column, report_column), "reports file"):
            yield f"{path}:{line}", (row[key_column] or "").strip(), row[report_column] or ""
        return
    if suffix != ".jsonl":
        raise PrepareError(f"{path}: reports file must be .csv or .jsonl (optionally .gz); got {suffix!r}.")
    if not path.is_file():
        raise PrepareError(f"{path}: reports file not found.")
    for record in read_report_records(path):
        if isinstance(record, ReportFileError):
            raise PrepareError(str(record))
        if key_column not in record.fields or report_column not in record.fields:
            raise PrepareError(f"{record.where}: expected an object with {key_column!r} and {report_column!r}.")
        yield record.where, str(record.fields[key_column]).strip(), str(record.fields[report_column] or "")
