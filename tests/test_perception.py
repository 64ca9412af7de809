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


def test_pointing_game_hits_when_the_peak_cell_overlaps_the_region():
    from trrg.evaluation.perception import pointing_chance, pointing_game, pointing_hit

    evidence = np.zeros((4, 4))
    evidence[1, 2] = 1.0  # peak cell covers x 64..96, y 32..64 of a 128 px image
    assert pointing_hit(evidence, [[70, 40, 80, 50]], (128, 128))
    assert not pointing_hit(evidence, [[0, 0, 30, 30]], (128, 128))
    assert pointing_hit(evidence, [[0, 0, 30, 30], [90, 60, 100, 70]], (128, 128))  # any of several boxes
    assert pointing_chance((4, 4), [[0, 0, 128, 128]], (128, 128)) == 1.0
    assert pointing_chance((4, 4), [[0, 0, 10, 10]], (128, 128)) == 1 / 16
    summary = pointing_game([("Fracture", evidence, [[70, 40, 80, 50]], (128, 128)),
                             ("Fracture", evidence, [[0, 0, 10, 10]], (128, 128))])
    assert summary["Fracture"] == {"hit_rate": 0.5, "chance_rate": 1 / 16, "cases": 2}
