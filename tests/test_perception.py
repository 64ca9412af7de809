import numpy as np

from trrg.evaluation.perception import auroc, f1_at, perception_scores


def test_auroc_counts_ordered_pairs_and_ties_half():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    targets = np.array([0, 0, 1, 1])
    assert auroc(scores, targets) == 0.75  # 3 of 4 positive-negative pairs ordered correctly
    assert auroc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert auroc(scores, np.zeros(4)) is None


def test_f1_and_summary():
    probs = np.array([[0.9, 0.2], [0.1, 0.7], [0.6, 0.1]])
    targets = np.array([[1, 0], [0, 1], [0, 0]])
    assert f1_at(probs[:, 0], targets[:, 0]) == 2 / 3
    summary = perception_scores(probs, targets, ["a", "b"])
    assert summary["per_observation"]["b"] == {"auroc": 1.0, "f1": 1.0, "positives": 1}
    assert summary["auroc_macro"] == 1.0
