"""Zero-shot disease perception of stage 1: AUROC and F1 per observation (pure numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def auroc(scores: np.ndarray, targets: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None without both classes."""
    targets = targets.astype(bool)
    positives, negatives = int(targets.sum()), int((~targets).sum())
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=float)
    sorted_scores = scores[order]
    # average ranks over ties
    unique, start_index, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = start_index + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[targets].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def f1_at(scores: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> float | None:
    predicted, targets = scores >= threshold, targets.astype(bool)
    true_positive = int((predicted & targets).sum())
    denominator = int(predicted.sum()) + int(targets.sum())
    return None if denominator == 0 else 2 * true_positive / denominator


def perception_scores(probs: np.ndarray, targets: np.ndarray, names: Sequence[str], threshold: float = 0.5) -> dict:
    """Per observation AUROC and F1@threshold, and their macro means over defined observations."""
    per_name = {}
    for index, name in enumerate(names):
        per_name[name] = {"auroc": auroc(probs[:, index], targets[:, index]),
                          "f1": f1_at(probs[:, index], targets[:, index], threshold),
                          "positives": int(targets[:, index].sum())}
    defined = lambda key: [v[key] for v in per_name.values() if v[key] is not None]  # noqa: E731
    return {"per_observation": per_name,
            "auroc_macro": float(np.mean(defined("auroc"))) if defined("auroc") else None,
            "f1_macro": float(np.mean(defined("f1"))) if defined("f1") else None,
            "threshold": threshold}
