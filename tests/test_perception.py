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


def test_pointing_cases_take_positive_findings_with_a_region_on_a_view_the_study_has():
    from PIL import Image

    from trrg.evaluation.perception import pointing_cases

    names = ["Fracture", "Lung Lesion"]
    rows = [{"id": "a", "labels": {"Fracture": 1, "Lung Lesion": 0}}, {"id": "b", "labels": {"Lung Lesion": 1}}]
    views = [[Image.new("L", (8, 6)), Image.new("L", (8, 6))], [Image.new("L", (4, 4))]]
    maps = np.arange(2 * 2 * 2 * 3 * 3, dtype=float).reshape(2, 2, 2, 3, 3)
    regions = {"a": {1: {"Fracture": [[0, 0, 2, 2]], "Lung Lesion": [[1, 1, 2, 2]]}},
               "b": {0: {"Lung Lesion": [[0, 0, 1, 1]]}, 1: {"Lung Lesion": [[0, 0, 1, 1]]}}}  # b has no view 1
    cases = pointing_cases(rows, views, maps, names, regions.__getitem__)
    assert [(name, boxes, size) for name, _, boxes, size in cases] == [
        ("Fracture", [[0, 0, 2, 2]], (6, 8)), ("Lung Lesion", [[0, 0, 1, 1]], (4, 4))]  # negatives left out
    assert np.array_equal(cases[0][1], maps[0, 1, 0]) and np.array_equal(cases[1][1], maps[1, 0, 1])
