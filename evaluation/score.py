"""``trrg score``: NLG and clinical-efficacy metrics for generated reports against references.

    trrg score --predictions preds.jsonl --references refs.jsonl --out metrics.json

Each JSONL line is ``{"id": ..., "report": ...}``; a reference ``report`` may be a list of strings
(several references). Lines are matched by id, not by order. The protocol (cleaning, tokenization,
labels) is documented in docs/METRICS.md and recorded in the output next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from trrg import __version__
from trrg.evaluation.clinical import UNCERTAIN_POLICIES
from trrg.evaluation.clinical import UncertainPolicy
from trrg.evaluation.clinical import clinical_efficacy_from_reports
from trrg.evaluation.nlg import nlg_scores

TextCleaning = Literal["r2gen", "none"]
TEXT_CLEANINGS: tuple[str, ...] = ("r2gen", "none")
METRIC_NOTES = (
    "BLEU-1..4/ROUGE-L/CIDEr-D: trrg.evaluation.nlg, pycocoevalcap 1.2 arithmetic (parity-tested); "
    "METEOR: meteor-1.5.jar -l en -norm; CE: trrg.processing.labeler on raw text, first reference, "
    "undefined classes None and left out of macro averages; see docs/METRICS.md"
)


class ScoreInputError(ValueError):
    """Bad predictions/references input; the message names the file, line or id and the fix."""


def metric_tokens(text: str, text_cleaning: TextCleaning = "r2gen") -> str:
    """The token string NLG metrics see: cleaned (R2Gen) or as given, tokens joined by one space."""
    if text_cleaning == "r2gen":
        from trrg.processing.text import clean_report  # the project's one cleaning function

        text = clean_report(text)
    elif text_cleaning != "none":
        raise ValueError(f"text_cleaning={text_cleaning!r}; expected one of {TEXT_CLEANINGS}")
    # R2Gen keeps "." as a token ("no effusion . heart normal ."): whitespace split, nothing dropped.
    return " ".join(text.split())


def _as_reference_list(reference: str | Sequence[str], index: int) -> list[str]:
    refs = [reference] if isinstance(reference, str) else list(reference)
    if not refs or not all(isinstance(ref, str) for ref in refs):
        raise ScoreInputError(f"reference {index} must be a string or a non-empty list of strings, got {reference!r}")
    return refs


def _check_lengths(predictions: Sequence[str], references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ScoreInputError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ScoreInputError("nothing to score: no predictions")
    for index, prediction in enumerate(predictions):
        if not isinstance(prediction, str):
            raise ScoreInputError(f"prediction {index} must be a string, got {prediction!r}")


def nlg_report_scores(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    text_cleaning: TextCleaning = "r2gen",
    meteor: bool = True,
) -> dict:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr of raw report texts (cleaned and tokenized first)."""
    _check_lengths(predictions, references)
    keys = [str(index) for index in range(len(predictions))]
    token_predictions = {key: [metric_tokens(text, text_cleaning)] for key, text in zip(keys, predictions)}
    token_references = {
        key: [metric_tokens(ref, text_cleaning) for ref in _as_reference_list(refs, int(key))]
        for key, refs in zip(keys, references)
    }
    return nlg_scores(token_predictions, token_references, meteor=meteor)


def ce_report_scores(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]], uncertain: UncertainPolicy = "positive"
) -> dict:
    """Clinical-efficacy metrics of raw report texts; with several references the first one counts."""
    _check_lengths(predictions, references)
    first_references = [_as_reference_list(refs, index)[0] for index, refs in enumerate(references)]
    return clinical_efficacy_from_reports(list(predictions), first_references, uncertain)


def score_reports(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    text_cleaning: TextCleaning = "r2gen",
    uncertain: UncertainPolicy = "positive",
    meteor: bool = True,
) -> dict:
    """All metrics of generated reports against references (same order), as one flat dict.

    Args:
        predictions: one generated report (raw text) per study.
        references: per study, the reference report or a list of references.
        text_cleaning: ``"r2gen"`` (R2Gen's ``clean_report``, then whitespace tokens) or ``"none"``
            (whitespace tokens of the text as given). NLG metrics only; CE labels the raw text.
        uncertain: how an uncertain label counts for CE: ``"positive"``, ``"negative"``, ``"ignore"``.
        meteor: ``False`` skips the METEOR jar (``meteor`` is then ``None``).

    Returns:
        ``bleu_1``..``bleu_4``, ``meteor``, ``rouge_l``, ``cider``, the ``ce_*`` metrics of
        ``trrg.evaluation.clinical``, and the protocol: ``n``, ``text_cleaning``, ``uncertain``,
        ``reference_for_ce``, ``trrg_version``, ``metric_notes``. Undefined values are ``None``.
    """
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain={uncertain!r}; expected one of {UNCERTAIN_POLICIES}")
    return {
        **nlg_report_scores(predictions, references, text_cleaning, meteor=meteor),
        **ce_report_scores(predictions, references, uncertain),
        "n": len(predictions),
        "text_cleaning": text_cleaning,
        "uncertain": uncertain,
        "reference_for_ce": "first",
        "trrg_version": __version__,
        "metric_notes": METRIC_NOTES,
    }


# ------------------------------------------------------------------------------------------ CLI


def read_reports(path: Path, allow_lists: bool) -> dict[str, str | list[str]]:
    """``{id: report}`` from a JSONL file of ``{"id", "report"}`` lines (blank lines skipped)."""
    reports: dict[str, str | list[str]] = {}
    with open(path, encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                message = f"{where}: not valid JSON ({error.msg}); each line must be one JSON object"
                raise ScoreInputError(message) from None
            if not isinstance(row, dict) or "id" not in row or "report" not in row:
                raise ScoreInputError(f'{where}: expected an object with "id" and "report", got {line.strip()[:80]}')
            key, report = str(row["id"]), row["report"]
            if not (isinstance(report, str) or (allow_lists and _is_string_list(report))):
                expected = "a string or a non-empty list of strings" if allow_lists else "a string"
                raise ScoreInputError(f'{where}: "report" of id {key!r} must be {expected}, got {report!r:.80}')
            if key in reports:
                raise ScoreInputError(f"{where}: duplicate id {key!r}; ids must be unique within a file")
            reports[key] = report
    return reports


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


def write_json_atomically(data: dict, path: Path) -> None:
    """Write to a temporary file next to ``path`` then rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False, encoding="utf-8"
    )
    with temporary as file:
        try:
            json.dump(data, file, indent=2)
            file.write("\n")
        except BaseException:
            os.unlink(file.name)
            raise
    os.replace(file.name, path)


def format_table(scores: dict) -> str:
    width = max(map(len, scores))

    def show(value) -> str:
        if value is None:
            return "n/a"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    return "\n".join(f"{key.ljust(width)}  {show(value)}" for key, value in scores.items())


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
    add("--out", type=Path, required=True, help="where to write the metrics JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        predictions = read_reports(args.predictions, allow_lists=False)
        references = read_reports(args.references, allow_lists=True)
        ids = match_ids(predictions, references, args.predictions, args.references)
        scores = score_reports(
            [predictions[key] for key in ids],
            [references[key] for key in ids],
            text_cleaning=args.text_cleaning,
            uncertain=args.uncertain,
            meteor=not args.no_meteor,
        )
    except (ScoreInputError, OSError) as error:
        print(f"trrg score: error: {error}", file=sys.stderr)
        return 1
    write_json_atomically(scores, args.out)
    print(format_table(scores))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
