"""Clinical-efficacy (CE) metrics: do generated reports state the same findings as the references?

Both sides are labelled with the project's one labeler (``trrg.processing.labeler``) over the 14
CheXpert observations; the pure functions here take those label dicts (observation -> 1 positive,
0 negative, -1 uncertain, None / absent = not mentioned), so they are testable without a labeler.

Conventions (also in docs/METRICS.md):
- "not mentioned" and "negative" are both negative; "uncertain" follows ``uncertain``:
  ``"positive"`` (default) / ``"negative"`` / ``"ignore"`` (a study-observation cell where either
  side is uncertain is left out of every count).
- Per observation, P = TP/(TP+FP), R = TP/(TP+FN), F1 = 2TP/(2TP+FP+FN). An observation with no
  positive on either side (TP+FP+FN = 0) is undefined: its P/R/F1 are ``None`` and it is left out
  of macro averages (``ce_macro_classes_*`` says how many were averaged). When it is defined, a
  zero denominator for P or R (nothing predicted / nothing to find) gives 0, so a model that never
  mentions a disease is not rewarded by having its precision dropped.
- Micro: P/R/F1 of the counts pooled over the observations (``None`` if all counts are zero).
- Example-based (PromptMRG's ``CheXbertMetrics.compute``): per study P/R/F1 over the 14
  observations, 0/0 counted as 0, averaged over studies. PromptMRG keeps only label 1 as
  positive, i.e. ``uncertain="negative"`` reproduces it.
- ``ce_normal_collapse``: among studies whose reference has a positive among the 12 disease
  observations (all but No Finding and Support Devices), the share whose generated report has
  none: the failure mode TRRG targets (abnormal study, normal-sounding report).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np

from trrg.modeling.configuration_trrg import CHEXPERT_OBSERVATIONS

UncertainPolicy = Literal["positive", "negative", "ignore"]
UNCERTAIN_POLICIES: tuple[str, ...] = ("positive", "negative", "ignore")
LabelDict = Mapping[str, int | None]

# The five observations of the CheXpert competition, the usual "CE-5" subset.
COMMON_FIVE: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
# Not diseases: a report that only mentions these still reads as normal.
NON_DISEASE: tuple[str, ...] = ("No Finding", "Support Devices")
DISEASES: tuple[str, ...] = tuple(name for name in CHEXPERT_OBSERVATIONS if name not in NON_DISEASE)
_STATES = {1: 1, 0: 0, -1: -1, None: 0}  # not mentioned counts as negative


def label_matrix(labels: Sequence[LabelDict], side: str = "labels") -> np.ndarray:
    """(studies, 14) int8 matrix of 1 / 0 / -1 in CHEXPERT_OBSERVATIONS order; None and absent -> 0."""
    matrix = np.zeros((len(labels), len(CHEXPERT_OBSERVATIONS)), dtype=np.int8)
    column = {name: j for j, name in enumerate(CHEXPERT_OBSERVATIONS)}
    for i, study in enumerate(labels):
        for name, value in study.items():
            if name not in column:
                raise ValueError(f"{side}[{i}]: unknown observation {name!r}; expected one of {CHEXPERT_OBSERVATIONS}")
            if value not in _STATES or isinstance(value, bool):
                raise ValueError(f"{side}[{i}][{name!r}] = {value!r}; expected 1, 0, -1 or None")
            matrix[i, column[name]] = _STATES[value]
    return matrix


def confusion_cells(
    predicted: np.ndarray, reference: np.ndarray, uncertain: UncertainPolicy = "positive"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean (studies, observations) matrices of true positives, false positives, false negatives."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain={uncertain!r}; expected one of {UNCERTAIN_POLICIES}")
    if predicted.shape != reference.shape:
        raise ValueError(f"{predicted.shape[0]} predicted label sets but {reference.shape[0]} reference label sets")
    positive_states = (1, -1) if uncertain == "positive" else (1,)
    predicted_positive, reference_positive = np.isin(predicted, positive_states), np.isin(reference, positive_states)
    counted = np.ones_like(predicted_positive)
    if uncertain == "ignore":
        counted = (predicted != -1) & (reference != -1)
    true_positive = predicted_positive & reference_positive & counted
    false_positive = predicted_positive & ~reference_positive & counted
    false_negative = ~predicted_positive & reference_positive & counted
    return true_positive, false_positive, false_negative


def precision_recall_f1(tp: float, fp: float, fn: float) -> tuple[float | None, float | None, float | None]:
    """P/R/F1 from counts; ``None`` for all three when there is no positive on either side."""
    if tp + fp + fn == 0:
        return None, None, None
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, 2 * tp / (2 * tp + fp + fn)


def _mean_defined(values: Iterable[float | None]) -> float | None:
    defined = [value for value in values if value is not None]
    return sum(defined) / len(defined) if defined else None


def class_scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, names: Sequence[str], suffix: str) -> dict:
    """Micro and macro P/R/F1 over the observations ``names`` (columns in CHEXPERT_OBSERVATIONS order)."""
    columns = [CHEXPERT_OBSERVATIONS.index(name) for name in names]
    counts = [(tp[:, j].sum(), fp[:, j].sum(), fn[:, j].sum()) for j in columns]
    per_class = [precision_recall_f1(*c) for c in counts]
    micro = precision_recall_f1(*(float(sum(c[k] for c in counts)) for k in range(3)))
    metrics = ("precision", "recall", "f1")
    return {
        **{f"ce_micro_{metric}_{suffix}": micro[k] for k, metric in enumerate(metrics)},
        **{
            f"ce_macro_{metric}_{suffix}": _mean_defined(class_[k] for class_ in per_class)
            for k, metric in enumerate(metrics)
        },
        f"ce_macro_classes_{suffix}": sum(class_[2] is not None for class_ in per_class),
    }


def per_observation_scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, float | None]:
    """``ce_precision/<name>``, ``ce_recall/<name>``, ``ce_f1/<name>`` for each of the 14 observations."""
    scores = {}
    for j, name in enumerate(CHEXPERT_OBSERVATIONS):
        precision, recall, f1 = precision_recall_f1(int(tp[:, j].sum()), int(fp[:, j].sum()), int(fn[:, j].sum()))
        scores |= {f"ce_precision/{name}": precision, f"ce_recall/{name}": recall, f"ce_f1/{name}": f1}
    return scores


def example_scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, float]:
    """PromptMRG's example-based P/R/F1: per study over all observations (0/0 -> 0), then the mean."""
    tp_study, fp_study, fn_study = (cells.sum(axis=1).astype(float) for cells in (tp, fp, fn))

    def mean_ratio(numerator: np.ndarray, denominator: np.ndarray) -> float:
        ratio = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
        return float(ratio.mean())

    return {
        "ce_example_precision": mean_ratio(tp_study, tp_study + fp_study),
        "ce_example_recall": mean_ratio(tp_study, tp_study + fn_study),
        "ce_example_f1": mean_ratio(tp_study, tp_study + 0.5 * (fp_study + fn_study)),
    }


def normal_collapse(
    predicted: np.ndarray, reference: np.ndarray, uncertain: UncertainPolicy = "positive"
) -> dict[str, float | int | None]:
    """Share of studies with an abnormal reference (a positive disease) whose prediction has none."""
    tp, fp, fn = confusion_cells(predicted, reference, uncertain)
    diseases = [CHEXPERT_OBSERVATIONS.index(name) for name in DISEASES]
    reference_abnormal = (tp | fn)[:, diseases].any(axis=1)
    predicted_abnormal = (tp | fp)[:, diseases].any(axis=1)
    abnormal = int(reference_abnormal.sum())
    collapsed = int((reference_abnormal & ~predicted_abnormal).sum())
    return {
        "ce_normal_collapse": collapsed / abnormal if abnormal else None,
        "ce_normal_collapse_studies": abnormal,
    }


def clinical_efficacy(
    predicted_labels: Sequence[LabelDict],
    reference_labels: Sequence[LabelDict],
    uncertain: UncertainPolicy = "positive",
) -> dict[str, float | int | None]:
    """All CE metrics from label dicts, as one flat dict (``None`` = undefined, never NaN)."""
    if len(predicted_labels) != len(reference_labels):
        raise ValueError(
            f"{len(predicted_labels)} predicted label sets but {len(reference_labels)} reference label sets"
        )
    if not predicted_labels:
        raise ValueError("nothing to score: no label sets")
    predicted = label_matrix(predicted_labels, "predicted_labels")
    reference = label_matrix(reference_labels, "reference_labels")
    tp, fp, fn = confusion_cells(predicted, reference, uncertain)
    return {
        **class_scores(tp, fp, fn, CHEXPERT_OBSERVATIONS, "14"),
        **class_scores(tp, fp, fn, COMMON_FIVE, "5"),
        **example_scores(tp, fp, fn),
        **normal_collapse(predicted, reference, uncertain),
        **per_observation_scores(tp, fp, fn),
    }


def clinical_efficacy_from_reports(
    predictions: Sequence[str], references: Sequence[str], uncertain: UncertainPolicy = "positive"
) -> dict[str, float | int | None]:
    """Label raw report texts with the project's labeler, then ``clinical_efficacy``."""
    from trrg.processing.labeler import label_reports  # imported here: the pure functions need no labeler

    return clinical_efficacy(label_reports(predictions), label_reports(references), uncertain)
