"""Truthfulness metrics: does the report state what the model itself perceived?

TRRG injects disease clues (the zero-shot perception of stage 1, after per-class thresholds) into
the language model. A truthful report states the findings the model perceived and no others. These
pure functions score the model's own **clue decisions** (studies x 14, 0/1, in
CHEXPERT_OBSERVATIONS order), so they are testable without a labeler or a model:

- ``perception_*`` (``perception_efficacy``): the clue decisions scored against the reference
  labels exactly as ``trrg.evaluation.clinical`` scores the report labels (same uncertain policy,
  micro/macro over the 14 and the common 5, undefined classes ``None``, per-observation P/R/F1):
  the decision vector stands in for the generated report's labels.
- ``clue_*`` (``clue_faithfulness``): the clue decisions against the labels of the generated
  report, over the 13 findings (every observation but No Finding, which the labeler derives from
  the absence of the others, so it is a summary rather than a finding a report states).
  ``clue_drop_rate``: among (study, observation) pairs with the clue present, the share whose
  report does not state the observation as positive. ``clue_unsupported_rate``: among pairs the
  report states as positive, the share without the clue. The uncertain policy applies to the
  report as it does for CE: ``"positive"`` (a hedged mention states it), ``"negative"`` (it does
  not), ``"ignore"`` (pairs where the report is uncertain are left out of every count).
  A rate with a zero denominator is ``None``, with its count 0.

- ``self_contradiction_*`` (``self_contradictions``): the share of reports in which one finding is
  affirmed (positive) by one sentence and negated by another, from sentence-level labels; needs no
  clues. Counts per observation come with it; ``self_contradiction_examples`` lists a few cases
  (``trrg score`` and ``trrg evaluate`` write them beside the metrics).

Decisions come from the prediction rows (``clue_decisions``): ``clues`` (the model's binary
decisions) when present, else ``disease_probs >= threshold`` (default 0.5); neither: no metrics.
Definitions in docs/METRICS.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from trrg.evaluation.clinical import CHEXPERT_OBSERVATIONS
from trrg.evaluation.clinical import COMMON_FIVE
from trrg.evaluation.clinical import LabelDict
from trrg.evaluation.clinical import UncertainPolicy
from trrg.evaluation.clinical import class_scores
from trrg.evaluation.clinical import confusion_cells
from trrg.evaluation.clinical import label_matrix
from trrg.evaluation.clinical import per_observation_scores
from trrg.modeling.verification_trrg import QUALIFIED_NEGATION

# The observations of clue_drop_rate / clue_unsupported_rate: the 13 findings (No Finding excluded).
CLUE_OBSERVATIONS: tuple[str, ...] = tuple(name for name in CHEXPERT_OBSERVATIONS if name != "No Finding")
DEFAULT_PERCEPTION_THRESHOLD = 0.5


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _vector(value, name: str, field: str) -> list:
    if not isinstance(value, list | tuple | np.ndarray) or len(value) != len(CHEXPERT_OBSERVATIONS):
        shown = repr(value) if not isinstance(value, list | tuple) else f"{len(value)} values"
        raise ValueError(
            f'{name}: "{field}" must be a list of {len(CHEXPERT_OBSERVATIONS)} values in CHEXPERT_OBSERVATIONS '
            f"order, got {shown:.80}"
        )
    # numpy scalars (an np.float32 probability) as Python numbers
    return [item.item() if isinstance(item, np.generic) else item for item in value]


def _first_missing(values: Sequence, names: Sequence[str], field: str) -> None:
    """Raise if some entries are None while others are not (rows with and without ``field``)."""
    missing = [i for i, value in enumerate(values) if value is None]
    if missing and len(missing) < len(values):
        having = next(i for i, value in enumerate(values) if value is not None)
        raise ValueError(
            f'{names[missing[0]]} has no "{field}" but {names[having]} has ({len(missing)} of {len(values)} '
            f'rows lack it); every prediction needs "{field}", or none may have it'
        )


def clue_decisions(
    clues: Sequence | None = None,
    disease_probs: Sequence | None = None,
    threshold: float = DEFAULT_PERCEPTION_THRESHOLD,
    names: Sequence[str] | None = None,
) -> tuple[np.ndarray | None, dict]:
    """The (studies, 14) int8 0/1 clue-decision matrix of the predictions, and how it was obtained.

    Args:
        clues: per study, the model's 14 binary clue decisions (0/1), or ``None`` where a row has none.
        disease_probs: per study, the 14 zero-shot probabilities, or ``None`` where a row has none.
            Used only when no study has ``clues``: the decision is then ``p >= threshold``.
        threshold: the fallback decision threshold, in [0, 1].
        names: how error messages name each study (e.g. ``"preds.jsonl:3 (id 's3')"``).

    Returns:
        ``(None, {})`` when no study has either field; else the matrix and the protocol
        ``{"perception_source": "clues" | "disease_probs", "perception_threshold": float | None}``
        (the threshold is ``None`` when the model's own ``clues`` were used).

    Raises:
        ValueError: some studies have the field the decisions come from and others do not, a
        vector does not have 14 entries, a clue is not 0/1, or a probability is not in [0, 1].
    """
    if not _is_number(threshold) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"perception threshold must be a number in [0, 1], got {threshold!r}")
    count = len(clues) if clues is not None else len(disease_probs) if disease_probs is not None else 0
    clues = list(clues) if clues is not None else [None] * count
    disease_probs = list(disease_probs) if disease_probs is not None else [None] * count
    if len(clues) != len(disease_probs):
        raise ValueError(f"{len(clues)} clue vectors but {len(disease_probs)} disease_probs vectors")
    names = list(names) if names is not None else [f"study {i}" for i in range(count)]
    if any(value is not None for value in clues):
        _first_missing(clues, names, "clues")
        matrix = np.zeros((count, len(CHEXPERT_OBSERVATIONS)), dtype=np.int8)
        for i, value in enumerate(clues):
            for j, decision in enumerate(_vector(value, names[i], "clues")):
                if not (isinstance(decision, bool) or (_is_number(decision) and decision in (0, 1))):
                    raise ValueError(
                        f'{names[i]}: "clues" must hold 0 or 1 (the binary decisions), got {decision!r} for '
                        f"{CHEXPERT_OBSERVATIONS[j]!r}; probabilities belong in \"disease_probs\""
                    )
                matrix[i, j] = int(decision)
        return matrix, {"perception_source": "clues", "perception_threshold": None}
    if any(value is not None for value in disease_probs):
        _first_missing(disease_probs, names, "disease_probs")
        matrix = np.zeros((count, len(CHEXPERT_OBSERVATIONS)), dtype=np.int8)
        for i, value in enumerate(disease_probs):
            for j, probability in enumerate(_vector(value, names[i], "disease_probs")):
                if not (_is_number(probability) and 0.0 <= probability <= 1.0):
                    raise ValueError(
                        f'{names[i]}: "disease_probs" must hold probabilities in [0, 1], got {probability!r} '
                        f"for {CHEXPERT_OBSERVATIONS[j]!r}"
                    )
                matrix[i, j] = probability >= threshold
        return matrix, {"perception_source": "disease_probs", "perception_threshold": float(threshold)}
    return None, {}


def decision_matrix(decisions) -> np.ndarray:
    """Check a (studies, 14) 0/1 decision array; an int8 copy."""
    matrix = np.asarray(decisions)
    if matrix.ndim != 2 or matrix.shape[1] != len(CHEXPERT_OBSERVATIONS):
        raise ValueError(f"clue decisions must be (studies, {len(CHEXPERT_OBSERVATIONS)}), got shape {matrix.shape}")
    if not np.isin(matrix, (0, 1)).all():
        raise ValueError("clue decisions must be 0 or 1")
    return matrix.astype(np.int8)


def perception_efficacy(
    decisions, reference_labels: Sequence[LabelDict], uncertain: UncertainPolicy = "positive"
) -> dict[str, float | int | None]:
    """``perception_*``: the clue decisions scored against the reference labels as CE scores a report.

    The keys are those of ``clinical.class_scores`` (14 and 5) and ``clinical.per_observation_scores``
    with ``ce_`` replaced by ``perception_``; the values equal the ``ce_*`` values of a report whose
    labels are the decisions (1 -> positive, 0 -> negative).
    """
    predicted = decision_matrix(decisions)
    reference = label_matrix(reference_labels, "reference_labels")
    if predicted.shape != reference.shape:
        raise ValueError(f"{predicted.shape[0]} clue decision vectors but {reference.shape[0]} reference label sets")
    tp, fp, fn = confusion_cells(predicted, reference, uncertain)
    scores = {
        **class_scores(tp, fp, fn, CHEXPERT_OBSERVATIONS, "14"),
        **class_scores(tp, fp, fn, COMMON_FIVE, "5"),
        **per_observation_scores(tp, fp, fn),
    }
    return {"perception_" + key.removeprefix("ce_"): value for key, value in scores.items()}


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def clue_faithfulness(
    decisions, report_labels: Sequence[LabelDict], uncertain: UncertainPolicy = "positive"
) -> dict[str, float | int | None]:
    """``clue_drop_rate`` and ``clue_unsupported_rate`` (with counts, overall and per observation).

    Over the 13 ``CLUE_OBSERVATIONS``: ``clue_present_count`` pairs with the clue present, of which
    ``clue_drop_count`` are not stated positive by the report; ``clue_report_positive_count`` pairs
    stated positive by the report, of which ``clue_unsupported_count`` have no clue. Per observation:
    ``clue_drop_rate/<name>``, ``clue_present_count/<name>``, ``clue_unsupported_rate/<name>``,
    ``clue_report_positive_count/<name>``. A rate is ``None`` when its count is 0.
    """
    clue = decision_matrix(decisions)
    report = label_matrix(report_labels, "report_labels")
    if clue.shape != report.shape:
        raise ValueError(f"{clue.shape[0]} clue decision vectors but {report.shape[0]} report label sets")
    # The clue as the "reference" and the report as the "prediction": a false negative is a dropped
    # clue, a false positive an unsupported statement; the uncertain policy applies to the report.
    stated_with_clue, unsupported, dropped = confusion_cells(report, clue, uncertain)
    columns = [CHEXPERT_OBSERVATIONS.index(name) for name in CLUE_OBSERVATIONS]
    present = (stated_with_clue | dropped)[:, columns].sum(axis=0)
    stated = (stated_with_clue | unsupported)[:, columns].sum(axis=0)
    drops, unsupported_counts = dropped[:, columns].sum(axis=0), unsupported[:, columns].sum(axis=0)
    scores: dict[str, float | int | None] = {
        "clue_drop_rate": _rate(int(drops.sum()), int(present.sum())),
        "clue_drop_count": int(drops.sum()),
        "clue_present_count": int(present.sum()),
        "clue_unsupported_rate": _rate(int(unsupported_counts.sum()), int(stated.sum())),
        "clue_unsupported_count": int(unsupported_counts.sum()),
        "clue_report_positive_count": int(stated.sum()),
    }
    for k, name in enumerate(CLUE_OBSERVATIONS):
        scores |= {
            f"clue_drop_rate/{name}": _rate(int(drops[k]), int(present[k])),
            f"clue_present_count/{name}": int(present[k]),
            f"clue_unsupported_rate/{name}": _rate(int(unsupported_counts[k]), int(stated[k])),
            f"clue_report_positive_count/{name}": int(stated[k]),
        }
    return scores


def truthfulness_scores(
    decisions,
    report_labels: Sequence[LabelDict],
    reference_labels: Sequence[LabelDict],
    uncertain: UncertainPolicy = "positive",
) -> dict[str, float | int | None]:
    """``perception_efficacy`` and ``clue_faithfulness`` as one flat dict."""
    return {
        **perception_efficacy(decisions, reference_labels, uncertain),
        **clue_faithfulness(decisions, report_labels, uncertain),
    }


def contradicted_findings(sentences: Sequence[tuple[str, LabelDict]]) -> list[tuple[str, str, str]]:
    """(observation, affirming sentence, negating sentence) for each of the 13 findings that one
    sentence of a report states as positive and another negates without qualification
    (``QUALIFIED_NEGATION``); the first of each, in order."""
    contradictions = []
    for name in CLUE_OBSERVATIONS:
        affirmed = next((text for text, labels in sentences if labels.get(name) == 1), None)
        negated = next((text for text, labels in sentences
                        if labels.get(name) == 0 and not QUALIFIED_NEGATION.search(text.lower())), None)
        if affirmed is not None and negated is not None:
            contradictions.append((name, affirmed, negated))
    return contradictions


def self_contradictions(reports: Sequence[Sequence[tuple[str, LabelDict]]]) -> dict[str, float | int | None]:
    """``self_contradiction_rate``: the share of reports that affirm and negate the same finding in
    different sentences (``reports``: per report, its sentences with their labels), with the count and
    the number of such reports per observation."""
    found = [{case[0] for case in contradicted_findings(sentences)} for sentences in reports]
    count = sum(bool(names) for names in found)
    return {
        "self_contradiction_rate": _rate(count, len(reports)),
        "self_contradiction_count": count,
        **{f"self_contradiction_count/{name}": sum(name in names for names in found) for name in CLUE_OBSERVATIONS},
    }


def self_contradiction_examples(reports: Sequence[Sequence[tuple[str, LabelDict]]], ids: Sequence,
                                limit: int = 5) -> list[dict]:
    """The first ``limit`` self-contradictions: study id, observation, the affirming and the negating sentence."""
    examples = [{"id": study_id, "observation": name, "affirmed": affirmed, "negated": negated}
                for study_id, sentences in zip(ids, reports) for name, affirmed, negated in contradicted_findings(sentences)]
    return examples[:limit]
