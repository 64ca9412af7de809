"""``trrg score``: NLG and clinical-efficacy metrics for generated reports against references.

    trrg score --predictions preds.jsonl --references refs.jsonl --out metrics.json

Each JSONL line is ``{"id": ..., "report": ...}``; a reference ``report`` may be a list of strings
(several references). Lines are matched by id, not by order. The protocol (cleaning, tokenization,
labels) is documented in docs/METRICS.md and recorded in the output next to the numbers.

Prediction lines may also carry the model's own perception: ``"clues"`` (14 binary clue decisions)
and/or ``"disease_probs"`` (14 zero-shot probabilities; the decision is then ``p >= 0.5``, or
``--perception-threshold``). Then the truthfulness metrics are added (``perception_*``,
``clue_drop_rate``, ``clue_unsupported_rate``; ``trrg.evaluation.truthfulness``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from trrg.evaluation.clinical import UNCERTAIN_POLICIES
from trrg.evaluation.score import TEXT_CLEANINGS, ScoreInputError, contradiction_examples, score_reports
from trrg.evaluation.tables import metrics_table
from trrg.evaluation.truthfulness import DEFAULT_PERCEPTION_THRESHOLD, clue_decisions
from trrg.processing.files import ReportFileError, read_report_records, write_json_atomically


def read_rows(path: Path, allow_lists: bool) -> dict[str, tuple[str, dict]]:
    """``{id: (where, row)}`` from a report file (JSONL of ``{"id", "report", ...}`` lines, R2Gen
    JSON or CSV): every row must have an id and a string report (``allow_lists``: or a non-empty
    list of strings), ids unique; the other fields of a row are kept as they are."""
    rows: dict[str, tuple[str, dict]] = {}
    for record in read_report_records(path):
        if isinstance(record, ReportFileError):
            raise record
        where, row = record.where, record.fields
        if "id" not in row or "report" not in row:
            raise ReportFileError(f'{where}: expected an object with "id" and "report", got {str(row)[:80]}')
        key, report = str(row["id"]), row["report"]
        if not (isinstance(report, str) or (allow_lists and _is_string_list(report))):
            expected = "a string or a non-empty list of strings" if allow_lists else "a string"
            raise ReportFileError(f'{where}: "report" of id {key!r} must be {expected}, got {report!r:.80}')
        if key in rows:
            raise ReportFileError(f"{where}: duplicate id {key!r}; ids must be unique within a file")
        rows[key] = (where, row)
    return rows


def _is_string_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, str) for item in value)


def match_ids(predictions: dict, references: dict, prediction_path: Path, reference_path: Path) -> list[str]:
    """The common ids in the references' order; any id present on one side only is an error."""
    no_reference = [key for key in predictions if key not in references]
    no_prediction = [key for key in references if key not in predictions]
    problems = []
    if no_reference:
        problems.append(
            f"{len(no_reference)} id(s) in {prediction_path} missing from {reference_path}: {no_reference[:10]}"
        )
    if no_prediction:
        problems.append(
            f"{len(no_prediction)} id(s) in {reference_path} missing from {prediction_path}: {no_prediction[:10]}"
        )
    if problems:
        raise ScoreInputError("; ".join(problems) + "; every study needs exactly one prediction and one reference")
    return list(references)


def perception_columns(rows: dict[str, tuple[str, dict]], ids: Sequence[str], threshold: float):
    """``clues`` and ``disease_probs`` of the prediction rows in ``ids`` order (``None`` where a row has
    none, and for a field no row has), checked with errors naming the file, line and id."""
    clues = [rows[key][1].get("clues") for key in ids]
    disease_probs = [rows[key][1].get("disease_probs") for key in ids]
    names = [f"{rows[key][0]} (id {key!r})" for key in ids]
    try:
        clue_decisions(clues, disease_probs, threshold, names)
    except ValueError as error:
        raise ScoreInputError(str(error)) from None
    return (
        clues if any(value is not None for value in clues) else None,
        disease_probs if any(value is not None for value in disease_probs) else None,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trrg score",
        description="NLG (BLEU, METEOR, ROUGE-L, CIDEr) and clinical-efficacy metrics of generated reports "
        "against references, matched by id. Protocol: docs/METRICS.md.",
    )
    add = parser.add_argument
    add("--predictions", type=Path, required=True, help='JSONL of {"id", "report"}: generated reports')
    add("--references", type=Path, required=True, help='JSONL of {"id", "report"}; "report" may be a list')
    add("--text-cleaning", choices=TEXT_CLEANINGS, default="r2gen", help="before NLG tokenization (default: r2gen)")
    add("--uncertain", choices=UNCERTAIN_POLICIES, default="positive", help="uncertain CE labels (default: positive)")
    add("--no-meteor", action="store_true", help="skip METEOR (no Java start-up)")
    add(
        "--perception-threshold",
        type=_probability,
        default=DEFAULT_PERCEPTION_THRESHOLD,
        help='clue decision p >= THRESHOLD for predictions with "disease_probs" but no "clues" (default: 0.5)',
    )
    add("--out", type=Path, required=True, help="where to write the metrics JSON")
    return parser


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = read_rows(args.predictions, allow_lists=False)
        predictions = {key: row["report"] for key, (_, row) in rows.items()}
        references = {key: row["report"] for key, (_, row) in read_rows(args.references, allow_lists=True).items()}
        ids = match_ids(predictions, references, args.predictions, args.references)
        clues, disease_probs = perception_columns(rows, ids, args.perception_threshold)
        scores = score_reports(
            [predictions[key] for key in ids],
            [references[key] for key in ids],
            text_cleaning=args.text_cleaning,
            uncertain=args.uncertain,
            meteor=not args.no_meteor,
            clues=clues,
            disease_probs=disease_probs,
            perception_threshold=args.perception_threshold,
        )
        scores["self_contradiction_examples"] = contradiction_examples([predictions[key] for key in ids], ids)
    except (ValueError, OSError) as error:
        print(f"trrg score: error: {error}", file=sys.stderr)
        return 1
    write_json_atomically(args.out, scores)
    print(metrics_table(scores, keys=None))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
