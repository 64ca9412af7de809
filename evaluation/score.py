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
from trrg.evaluation.clinical import clinical_efficacy
from trrg.evaluation.clinical import clinical_efficacy_from_reports
from trrg.evaluation.nlg import nlg_scores
from trrg.evaluation.truthfulness import DEFAULT_PERCEPTION_THRESHOLD
from trrg.evaluation.truthfulness import clue_decisions
from trrg.evaluation.truthfulness import truthfulness_scores

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
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    uncertain: UncertainPolicy = "positive",
    clues: Sequence | None = None,
    disease_probs: Sequence | None = None,
    perception_threshold: float = DEFAULT_PERCEPTION_THRESHOLD,
) -> dict:
    """Clinical-efficacy metrics of raw report texts; with several references the first one counts.

    With ``clues`` or ``disease_probs`` (per study, same order; see ``truthfulness.clue_decisions``)
    the truthfulness metrics are added, from the same labels: ``perception_*``, ``clue_*``, and the
    protocol ``perception_source`` / ``perception_threshold``.
    """
    _check_lengths(predictions, references)
    first_references = [_as_reference_list(refs, index)[0] for index, refs in enumerate(references)]
    decisions, perception_protocol = _clue_decisions(len(predictions), clues, disease_probs, perception_threshold)
    if decisions is None:
        return clinical_efficacy_from_reports(list(predictions), first_references, uncertain)
    from trrg.processing.labeler import label_reports

    predicted_labels, reference_labels = label_reports(list(predictions)), label_reports(first_references)
    return {
        **clinical_efficacy(predicted_labels, reference_labels, uncertain),
        **truthfulness_scores(decisions, predicted_labels, reference_labels, uncertain),
        **perception_protocol,
    }


def _clue_decisions(count: int, clues, disease_probs, threshold: float):
    for name, values in (("clues", clues), ("disease_probs", disease_probs)):
        if values is not None and len(values) != count:
            raise ScoreInputError(f"{count} predictions but {len(values)} {name} entries")
    return clue_decisions(clues, disease_probs, threshold)


def score_reports(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    text_cleaning: TextCleaning = "r2gen",
    uncertain: UncertainPolicy = "positive",
    meteor: bool = True,
    clues: Sequence | None = None,
    disease_probs: Sequence | None = None,
    perception_threshold: float = DEFAULT_PERCEPTION_THRESHOLD,
) -> dict:
    """All metrics of generated reports against references (same order), as one flat dict.

    Args:
        predictions: one generated report (raw text) per study.
        references: per study, the reference report or a list of references.
        text_cleaning: ``"r2gen"`` (R2Gen's ``clean_report``, then whitespace tokens) or ``"none"``
            (whitespace tokens of the text as given). NLG metrics only; CE labels the raw text.
        uncertain: how an uncertain label counts for CE: ``"positive"``, ``"negative"``, ``"ignore"``.
        meteor: ``False`` skips the METEOR jar (``meteor`` is then ``None``).
        clues: per study, the model's 14 binary clue decisions (or ``None`` for the whole argument).
        disease_probs: per study, the 14 zero-shot probabilities; used only without ``clues``.
        perception_threshold: the decision ``p >= perception_threshold`` for ``disease_probs``.

    Returns:
        ``bleu_1``..``bleu_4``, ``meteor``, ``rouge_l``, ``cider``, the ``ce_*`` metrics of
        ``trrg.evaluation.clinical``, and the protocol: ``n``, ``text_cleaning``, ``uncertain``,
        ``reference_for_ce``, ``trrg_version``, ``metric_notes``. With ``clues`` or
        ``disease_probs``, also the ``perception_*`` and ``clue_*`` metrics of
        ``trrg.evaluation.truthfulness`` and ``perception_source`` / ``perception_threshold``.
        Undefined values are ``None``.
    """
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain={uncertain!r}; expected one of {UNCERTAIN_POLICIES}")
    _clue_decisions(len(predictions), clues, disease_probs, perception_threshold)  # bad input fails before NLG
    return {
        **nlg_report_scores(predictions, references, text_cleaning, meteor=meteor),
        **ce_report_scores(predictions, references, uncertain, clues, disease_probs, perception_threshold),
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
    return {key: row["report"] for key, (_, row) in read_rows(path, allow_lists).items()}


def read_rows(path: Path, allow_lists: bool) -> dict[str, tuple[int, dict]]:
    """``{id: (line number, row)}`` from a JSONL file of ``{"id", "report", ...}`` lines, checked as
    ``read_reports`` checks them; the other fields of a row are kept as they are."""
    reports: dict[str, tuple[int, dict]] = {}
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
            reports[key] = (line_number, row)
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


def perception_columns(rows: dict[str, tuple[int, dict]], ids: Sequence[str], path: Path, threshold: float):
    """``clues`` and ``disease_probs`` of the prediction rows in ``ids`` order (``None`` where a row has
    none, and for a field no row has), checked with errors naming the file, line and id."""
    clues = [rows[key][1].get("clues") for key in ids]
    disease_probs = [rows[key][1].get("disease_probs") for key in ids]
    names = [f"{path}:{rows[key][0]} (id {key!r})" for key in ids]
    try:
        clue_decisions(clues, disease_probs, threshold, names)
    except ValueError as error:
        raise ScoreInputError(str(error)) from None
    return (
        clues if any(value is not None for value in clues) else None,
        disease_probs if any(value is not None for value in disease_probs) else None,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = read_rows(args.predictions, allow_lists=False)
        predictions = {key: row["report"] for key, (_, row) in rows.items()}
        references = read_reports(args.references, allow_lists=True)
        ids = match_ids(predictions, references, args.predictions, args.references)
        clues, disease_probs = perception_columns(rows, ids, args.predictions, args.perception_threshold)
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
    except (ScoreInputError, OSError) as error:
        print(f"trrg score: error: {error}", file=sys.stderr)
        return 1
    write_json_atomically(scores, args.out)
    print(format_table(scores))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
