"""Reading report files and writing results, one implementation each for the whole project.

* ``read_report_records(path)``: the records of a report file, each with the place it came from:
  JSONL (``{"id", "report", ...}`` per line), an R2Gen ``annotation.json`` (its entries, all
  splits) or CSV (``id`` and ``report`` columns, or one headerless column); each may be gzipped
  (``.jsonl.gz``, as PhysioNet ships its tables).
* ``open_text(path)``: a UTF-8 text file or its gzip, with or without a byte-order mark (Excel's
  "CSV UTF-8" starts with one; read as plain UTF-8 it would glue itself to the first column's name).
* ``write_json_atomically`` / ``write_jsonl_atomically`` / ``write_csv_atomically``: written beside
  the target, then renamed over it, so a crash or a full disk never leaves half a file where an
  earlier result was. The file is created readable by its owner only (``mkstemp``'s mode 0600).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPORT_FILE_SUFFIXES = (".jsonl", ".json", ".csv")
TEXT_ENCODING = "utf-8-sig"  # UTF-8; a leading byte-order mark, when there is one, is not part of the text
ENCODING_NOTE = "read as UTF-8, with or without a byte-order mark"


def open_text(path: Path):
    """A UTF-8 text file, or its gzip (``.csv.gz`` / ``.jsonl.gz``), with or without a byte-order mark."""
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding=TEXT_ENCODING, newline="")
    return path.open(encoding=TEXT_ENCODING, newline="")


def report_file_suffix(path: Path) -> str:
    """The file type under an optional ``.gz``: "x.jsonl.gz" -> ".jsonl"."""
    suffix = path.suffix.lower()
    return Path(path.stem).suffix.lower() if suffix == ".gz" else suffix


class ReportFileError(ValueError):
    """A report file, or one of its records, that cannot be read; names the file and the line."""


@dataclass(frozen=True)
class ReportRecord:
    """One record of a report file: ``where`` is "file:line" (or "file: split[index]", "file: row N")."""

    where: str
    fields: dict


def read_report_records(path: str | os.PathLike) -> Iterator[ReportRecord | ReportFileError]:
    """The records of a report file, in file order; a ``ReportFileError`` takes the place of each
    record that is not a JSON object / CSV row, so a caller decides whether one bad line is fatal.
    A file that cannot be read at all raises."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass a .jsonl, R2Gen .json or .csv file of reports")
    readers = {".jsonl": _jsonl_records, ".json": _annotation_records, ".csv": _csv_records}
    suffix = report_file_suffix(path)
    if suffix not in readers:
        raise ReportFileError(f"{path}: unknown report file type {suffix!r}; use .jsonl, .json (R2Gen annotation) "
                              "or .csv, optionally gzipped")
    return readers[suffix](path)


def _jsonl_records(path: Path) -> Iterator[ReportRecord | ReportFileError]:
    with open_text(path) as file:
        for line_number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield ReportFileError(f"{where}: not valid JSON ({error.msg}); each line must be one JSON object")
                continue
            if not isinstance(record, dict):
                yield ReportFileError(f"{where}: expected a JSON object, got {line.strip()[:80]}")
                continue
            yield ReportRecord(where, record)


def _annotation_records(path: Path) -> Iterator[ReportRecord | ReportFileError]:
    # R2Gen annotation.json: {"train": [{"id", "report", ...}], "val": [...], "test": [...]};
    # a plain list of records is accepted too.
    try:
        with open_text(path) as file:
            data = json.load(file)
    except json.JSONDecodeError as error:
        raise ReportFileError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    splits = {"records": data} if isinstance(data, list) else data
    if not isinstance(splits, dict):
        raise ReportFileError(f"{path}: expected an R2Gen annotation {{'train': [...], ...}}, got {type(data).__name__}")
    for split, records in splits.items():
        if not isinstance(records, list):
            yield ReportFileError(f"{path}: split {split!r} is {type(records).__name__}, expected a list of records")
            continue
        for index, record in enumerate(records):
            where = f"{path}: {split}[{index}]"
            if isinstance(record, dict):
                yield ReportRecord(where, record)
            else:
                yield ReportFileError(f"{where}: expected an object with 'id' and 'report'")


def _csv_records(path: Path) -> Iterator[ReportRecord | ReportFileError]:
    with open_text(path) as file:
        rows = list(csv.reader(file))
    if not rows:
        return
    header = [name.strip().lower() for name in rows[0]]
    if "report" in header or "reports" in header:
        report_column = header.index("report" if "report" in header else "reports")
        id_column = header.index("id") if "id" in header else None
        rows, first_number = rows[1:], 2
    elif len(header) == 1:  # headerless single column, as the CheXpert labeler reads
        report_column, id_column, first_number = 0, None, 1
    else:
        raise ReportFileError(f"{path}:1: no 'report' column in header {rows[0]}; add columns 'id' and 'report'")
    for offset, row in enumerate(rows):
        row_number = first_number + offset
        if len(row) <= max(report_column, id_column or 0):
            yield ReportFileError(f"{path}: row {row_number}: {len(row)} fields, too few for the header")
            continue
        report_id = row[id_column] if id_column is not None else offset + 1
        yield ReportRecord(f"{path}: row {row_number}", {"id": report_id, "report": row[report_column]})


def write_jsonl_atomically(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """One JSON object per line."""
    _write_atomically(path, lambda file: file.writelines(json.dumps(record) + "\n" for record in records))


def write_json_atomically(path: str | os.PathLike, data) -> None:
    """Indented JSON with a final newline."""
    _write_atomically(path, lambda file: file.write(json.dumps(data, indent=2) + "\n"))


def write_csv_atomically(path: str | os.PathLike, header: list[str], rows: Iterable[list]) -> None:
    """A CSV with a header row."""

    def write(file):
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)

    _write_atomically(path, write)


def _write_atomically(path: str | os.PathLike, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
