"""``score_reports``: the project's one metric path, NLG and clinical efficacy of generated reports
against references, plus the truthfulness metrics when the model's perception is given. The
protocol (cleaning, tokenization, labels) is documented in docs/METRICS.md and recorded in the
output next to the numbers; ``trrg score`` applies it to files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from trrg import __version__
from trrg.evaluation.clinical import UNCERTAIN_POLICIES
from trrg.evaluation.clinical import UncertainPolicy
from trrg.evaluation.clinical import clinical_efficacy
from trrg.evaluation.clinical import clinical_efficacy_from_reports
from trrg.evaluation.nlg import nlg_scores
from trrg.evaluation.truthfulness import DEFAULT_PERCEPTION_THRESHOLD
from trrg.evaluation.truthfulness import clue_decisions
from trrg.evaluation.truthfulness import self_contradiction_examples
from trrg.evaluation.truthfulness import self_contradictions
from trrg.processing.labeler import label_sentences
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
    contradictions = self_contradictions([label_sentences(report) for report in predictions])
    if decisions is None:
        return {**clinical_efficacy_from_reports(list(predictions), first_references, uncertain), **contradictions}
    from trrg.processing.labeler import label_reports

    predicted_labels, reference_labels = label_reports(list(predictions)), label_reports(first_references)
    return {
        **clinical_efficacy(predicted_labels, reference_labels, uncertain),
        **truthfulness_scores(decisions, predicted_labels, reference_labels, uncertain),
        **contradictions,
        **perception_protocol,
    }


def contradiction_examples(predictions: Sequence[str], ids: Sequence, limit: int = 5) -> list[dict]:
    """The first ``limit`` self-contradicting sentence pairs of the predictions, by study id (written
    beside the metrics by ``trrg score`` and ``trrg evaluate``)."""
    return self_contradiction_examples([label_sentences(report) for report in predictions], ids, limit)



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
