"""``trrg label``: label radiology reports with the 14 CheXpert observations (``trrg.processing.labeler``).

    trrg label reports.jsonl --output labels.jsonl
"""

from __future__ import annotations

import argparse
import sys

from trrg.processing.files import ReportFileError, ReportRecord, read_report_records, write_jsonl_atomically
from trrg.processing.labeler import label_report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trrg label",
        description="Label radiology reports with the 14 CheXpert observations "
        "(1 positive, 0 negative, -1 uncertain, null not mentioned).",
        epilog="Exit status: 0 when every record was labelled; 1 when some records could not be read "
        "(each is reported on stderr with its line, the others are still labelled); 2 on usage errors.",
    )
    parser.add_argument(
        "input",
        help="reports: JSONL with {'id', 'report'} per line, an R2Gen annotation.json "
        "({'train': [{'id', 'report', ...}], ...}) or a CSV with columns id and report "
        "(or a 'Reports' column / a single headerless column; ids are then row numbers)",
    )
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        help="JSONL to write: {'id': ..., 'labels': {observation: 1|0|-1|null}} per report",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    failures = 0
    records = []
    try:
        for item in read_report_records(args.input):
            if isinstance(item, ReportRecord):
                problem = _report_problem(item.fields)
                if problem is None:
                    records.append({"id": item.fields["id"], "labels": label_report(item.fields["report"])})
                    continue
                item = ReportFileError(f"{item.where}: {problem}; expected 'id' and 'report' (a string)")
            failures += 1
            print(f"trrg label: {item}", file=sys.stderr)
    except (OSError, ValueError) as error:  # unreadable file as a whole
        print(f"trrg label: cannot read {args.input}: {error}", file=sys.stderr)
        return 1
    write_jsonl_atomically(args.output, records)
    print(f"trrg label: labelled {len(records)} reports -> {args.output}"
          + (f"; {failures} records failed (see above)" if failures else ""), file=sys.stderr)
    return 1 if failures else 0


def _report_problem(fields: dict) -> str | None:
    if "id" not in fields or "report" not in fields:
        return f"missing {[key for key in ('id', 'report') if key not in fields]}"
    if not isinstance(fields["report"], str):
        return f"'report' is {type(fields['report']).__name__}, not a string"
    return None


if __name__ == "__main__":
    sys.exit(main())
