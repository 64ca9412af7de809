"""What every source of ``trrg prepare`` produces before anything is written: the planned studies
(ids, image files, target report, raw labels, patient, split), the tally of what was dropped and
why (with one audit record per dropped study, skipped file and resolved duplicate), and the error
type for bad input. Also the small CSV/JSONL readers the sources share."""

from __future__ import annotations

import csv
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from trrg.processing.files import ENCODING_NOTE, ReportFileError, open_text, read_report_records, report_file_suffix


class PrepareError(ValueError):
    """Input that cannot be prepared; the message names the file (and line) and the fix."""


@dataclass(frozen=True)
class PlannedImage:
    """One view: the file it comes from and its file name in the prepared data (a base name:
    ``save_to_disk`` keeps only base names of image paths). ``decode``: store ``load_xray_image``'s
    PNG instead of the file's own bytes (always for DICOM). ``audit_name``: how the audit names the
    file when it cannot be stored (a pseudonym when ids are pseudonymised; default its path)."""

    file: Path
    name: str
    decode: bool = False
    audit_name: str = ""


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
    """What a preparation left out, per reason, and why, one audit record per item.

    * ``dropped``: studies (a study found in the source and not kept);
    * ``skipped``: files, views and report rows that are not studies (not a DICOM, a view beyond
      ``--max-views``, a report row whose key matches no study, ...);
    * ``duplicates``: report rows that repeat a study's key, resolved by the documented rule (the
      study itself is kept or dropped on its own account, so these are neither);
    * ``found``: studies the source holds, set by the source; every one is kept or dropped, so
      kept + dropped = found (the summary checks it);
    * ``audit``: the records written to ``prepare_audit.jsonl``. With ``private`` (ids
      pseudonymised) records carry no free-text ``detail``: error messages quote paths, and a PACS
      path holds the MRN and the accession number.
    """

    dropped: Counter = field(default_factory=Counter)  # reason -> studies
    skipped: Counter = field(default_factory=Counter)  # reason -> files / views / report rows
    duplicates: Counter = field(default_factory=Counter)  # resolution -> report rows
    notes: list[str] = field(default_factory=list)  # one-line remarks printed after the counts
    audit: list[dict] = field(default_factory=list)
    found: int | None = None
    private: bool = False

    def drop(self, reason: str, study: str | None = None, **details) -> None:
        """One study left out; ``study`` is its id as the prepared data would name it."""
        self.dropped[reason] += 1
        self._record("dropped study", reason, study=study, **details)

    def skip(self, reason: str, file: str | None = None, **details) -> None:
        """One file, view or report row left out (``file``, or ``where`` for a row)."""
        self.skipped[reason] += 1
        self._record("skipped", reason, file=file, **details)

    def duplicate(self, resolution: str, study: str | None = None, **details) -> None:
        """One report row that repeats a study's key, and what was done with it."""
        self.duplicates[resolution] += 1
        self._record("duplicate report row", resolution, study=study, **details)

    def _record(self, outcome: str, reason: str, **details) -> None:
        if self.private:
            details.pop("detail", None)
        self.audit.append({"outcome": outcome, "reason": reason,
                           **{key: value for key, value in details.items() if value is not None}})


def study_counts(studies: list[PlannedStudy]) -> dict[str, int]:
    return dict(Counter(study.split for study in studies))


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------


CSV_DELIMITERS = (",", ";", "\t")  # Excel writes ";" where the decimal mark is a comma


def read_csv(path: Path, required: tuple[str, ...], what: str,
             hint: str = "Pass the right file.") -> Iterator[tuple[int, dict]]:
    """(line number where the row starts, row) of a CSV (or .csv.gz) that must have the ``required``
    columns; ``hint`` ends the error when one is missing (which option names the columns). The
    delimiter is the one of ``CSV_DELIMITERS`` the header line uses most; names are stripped."""
    if not path.is_file():
        raise PrepareError(f"{path}: {what} not found. Pass its path (see trrg prepare --help).")
    try:
        with open_text(path) as file:
            header = file.readline()
            delimiter = _delimiter(header)
            reader = csv.DictReader(itertools.chain([header], file), delimiter=delimiter)
            columns = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = columns
            missing = [column for column in required if column not in columns]
            if missing:
                raise PrepareError(f"{path}: {what} lacks the column(s) {missing}; its header (line 1, {ENCODING_NOTE}, "
                                   f"delimiter {delimiter!r}) has the columns {columns}. {hint}")
            end = 1
            for row in reader:  # a quoted field may span lines: name the line where the row starts
                start, end = end + 1, reader.line_num
                yield start, row
    except UnicodeDecodeError as error:
        raise PrepareError(f"{path}: the {what} is not UTF-8 text ({error}; {ENCODING_NOTE}). Save it as UTF-8 "
                           "(Excel: Save As 'CSV UTF-8 (Comma delimited)').") from error
    except (OSError, csv.Error) as error:
        raise PrepareError(f"{path}: cannot read the {what} ({error}).") from error


def _delimiter(header: str) -> str:
    counts = [header.count(delimiter) for delimiter in CSV_DELIMITERS]
    return CSV_DELIMITERS[counts.index(max(counts))]  # a tie (one column) keeps ","


@dataclass(frozen=True)
class ReportRow:
    """One row of a report table: where it is ("file:line"), its key, its text and its date cell
    ("" without ``date_column``)."""

    where: str
    key: str
    text: str
    date: str = ""


def read_report_table(path: Path, key_column: str, report_column: str, date_column: str | None = None,
                      hint: str = "") -> Iterator[ReportRow]:
    """The rows of a CSV or JSONL (optionally .gz) of reports keyed by ``key_column``; the first bad
    line stops the preparation (a report that cannot be read would silently lose a study). ``hint``
    ends the error naming missing columns (the options that name them)."""
    required = tuple(column for column in (key_column, report_column, date_column) if column)
    hint = hint or f"Name the columns that hold them: {required}."
    suffix = report_file_suffix(path)
    if suffix == ".csv":
        for line, row in read_csv(path, required, "reports file", hint):
            yield ReportRow(f"{path}:{line}", (row[key_column] or "").strip(), row[report_column] or "",
                            (row[date_column] or "").strip() if date_column else "")  # fmt: skip
        return
    if suffix != ".jsonl":
        raise PrepareError(f"{path}: reports file must be .csv or .jsonl (optionally .gz); got {suffix!r}.")
    if not path.is_file():
        raise PrepareError(f"{path}: reports file not found.")
    try:
        for record in read_report_records(path):
            if isinstance(record, ReportFileError):
                raise PrepareError(str(record))
            missing = [column for column in required if column not in record.fields]
            if missing:
                raise PrepareError(f"{record.where}: the object lacks {missing} (it has {sorted(record.fields)}; "
                                   f"{ENCODING_NOTE}). {hint}")
            date = str(record.fields[date_column] or "").strip() if date_column else ""
            yield ReportRow(record.where, str(record.fields[key_column]).strip(), str(record.fields[report_column] or ""), date)
    except UnicodeDecodeError as error:
        raise PrepareError(f"{path}: the reports file is not UTF-8 text ({error}; {ENCODING_NOTE}). Save it as UTF-8.") from error
