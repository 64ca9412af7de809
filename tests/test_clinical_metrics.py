"""Clinical-efficacy metrics on hand-made label dicts (expected values worked out by hand below)."""

import numpy as np
import pytest

from trrg.evaluation.clinical import CHEXPERT_OBSERVATIONS, clinical_efficacy, confusion_cells, example_scores, label_matrix

# Three studies. With uncertain="positive" the cells are:
#   study 0: Cardiomegaly TP, Edema TP (reference uncertain -> positive), Pleural Effusion both negative
#   study 1: Pleural Effusion FN, Atelectasis FN, No Finding FP   (abnormal study, "normal" report)
#   study 2: No Finding TP, Pneumothorax FP
REFERENCES = [
    {"Cardiomegaly": 1, "Edema": -1, "Pleural Effusion": 0},
    {"Pleural Effusion": 1, "Atelectasis": 1, "Pneumothorax": None},
    {"No Finding": 1},
]
PREDICTIONS = [
    {"Cardiomegaly": 1, "Edema": 1},
    {"No Finding": 1},
    {"No Finding": 1, "Pneumothorax": 1},
]


def test_hand_computed_values_uncertain_positive():
    scores = clinical_efficacy(PREDICTIONS, REFERENCES, uncertain="positive")
    # Pooled over the 14: TP 3, FP 2, FN 2.
    assert scores["ce_micro_precision_14"] == pytest.approx(3 / 5)
    assert scores["ce_micro_recall_14"] == pytest.approx(3 / 5)
    assert scores["ce_micro_f1_14"] == pytest.approx(6 / 10)
    # Six defined observations: Cardiomegaly (1,1,1), Edema (1,1,1), Pleural Effusion (0,0,0),
    # Atelectasis (0,0,0), No Finding (1/2, 1, 2/3), Pneumothorax (0,0,0).
    assert scores["ce_macro_classes_14"] == 6
    assert scores["ce_macro_precision_14"] == pytest.approx(2.5 / 6)
    assert scores["ce_macro_recall_14"] == pytest.approx(3 / 6)
    assert scores["ce_macro_f1_14"] == pytest.approx((2 + 2 / 3) / 6)
    # Common five: TP 2 (Cardiomegaly, Edema), FN 2 (Effusion, Atelectasis); Consolidation undefined.
    assert scores["ce_micro_f1_5"] == pytest.approx(4 / 6)
    assert scores["ce_macro_f1_5"] == pytest.approx(2 / 4)
    assert scores["ce_macro_classes_5"] == 4
    assert scores["ce_f1/No Finding"] == pytest.approx(2 / 3)
    assert scores["ce_precision/No Finding"] == pytest.approx(1 / 2)
    assert scores["ce_f1/Fracture"] is None
    # Per study (P, R, F1): (1, 1, 1), (0, 0, 0), (1/2, 1, 2/3).
    assert scores["ce_example_precision"] == pytest.approx(1.5 / 3)
    assert scores["ce_example_recall"] == pytest.approx(2 / 3)
    assert scores["ce_example_f1"] == pytest.approx((1 + 2 / 3) / 3)
    # Studies 0 and 1 have an abnormal reference; study 1's report states no disease.
    assert scores["ce_normal_collapse"] == pytest.approx(1 / 2)
    assert scores["ce_normal_collapse_studies"] == 2


def test_uncertain_policy_switch():
    negative = clinical_efficacy(PREDICTIONS, REFERENCES, uncertain="negative")
    # The uncertain Edema reference is now negative: the predicted Edema is a false positive.
    assert negative["ce_micro_f1_14"] == pytest.approx(2 * 2 / (2 * 2 + 3 + 2))
    assert negative["ce_f1/Edema"] == 0.0
    ignore = clinical_efficacy(PREDICTIONS, REFERENCES, uncertain="ignore")
    # The Edema cell of study 0 is dropped: Edema has no counted positive, so it is undefined.
    assert ignore["ce_micro_f1_14"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))
    assert ignore["ce_f1/Edema"] is None
    assert ignore["ce_macro_classes_14"] == 5
    with pytest.raises(ValueError, match="uncertain="):
        clinical_efficacy(PREDICTIONS, REFERENCES, uncertain="maybe")


def test_uncertain_prediction_counts_as_positive_by_default():
    scores = clinical_efficacy([{"Edema": -1}], [{"Edema": 1}])
    assert scores["ce_f1/Edema"] == 1.0
    assert scores["ce_normal_collapse"] == 0.0


def test_all_normal_corpus_has_no_nan_and_no_defined_classes():
    scores = clinical_efficacy([{"Edema": 0}, {}], [{"Pneumothorax": 0}, {"Fracture": None}])
    assert scores["ce_macro_classes_14"] == 0
    assert scores["ce_macro_f1_14"] is None and scores["ce_micro_f1_14"] is None
    assert scores["ce_normal_collapse"] is None and scores["ce_normal_collapse_studies"] == 0
    # PromptMRG's example-based convention: a study with nothing to find and nothing found scores 0.
    assert scores["ce_example_f1"] == 0.0
    assert not any(isinstance(value, float) and np.isnan(value) for value in scores.values())


def test_support_devices_alone_is_not_an_abnormal_study():
    scores = clinical_efficacy([{"No Finding": 1}], [{"Support Devices": 1}])
    assert scores["ce_normal_collapse"] is None
    scores = clinical_efficacy([{"Support Devices": 1}], [{"Lung Opacity": 1}])
    assert scores["ce_normal_collapse"] == 1.0


def test_example_based_matches_promptmrg_formula():
    """PromptMRG (jhb86253817/PromptMRG, modules/metrics_clinical.py): label 1 only is positive,
    per-example tp/(tp+fp), tp/(tp+fn), tp/(tp+0.5(fp+fn)) with NaN -> 0, then the mean."""
    rng = np.random.default_rng(0)
    states = [-1, 0, 1, None]
    predicted = [{name: states[rng.integers(4)] for name in CHEXPERT_OBSERVATIONS} for _ in range(40)]
    reference = [{name: states[rng.integers(4)] for name in CHEXPERT_OBSERVATIONS} for _ in range(40)]
    pred, ref = label_matrix(predicted) == 1, label_matrix(reference) == 1
    tp, fp, fn = (pred & ref).sum(1), (pred & ~ref).sum(1), (~pred & ref).sum(1)
    with np.errstate(invalid="ignore"):
        expected = {
            "ce_example_precision": np.nan_to_num(tp / (tp + fp)).mean(),
            "ce_example_recall": np.nan_to_num(tp / (tp + fn)).mean(),
            "ce_example_f1": np.nan_to_num(tp / (tp + 0.5 * (fp + fn))).mean(),
        }
    ours = example_scores(*confusion_cells(label_matrix(predicted), label_matrix(reference), "negative"))
    assert ours == pytest.approx(expected)


def test_bad_labels_are_named():
    with pytest.raises(ValueError, match=r"predicted_labels\[0\].*'Cardiomegally'"):
        clinical_efficacy([{"Cardiomegally": 1}], [{}])
    with pytest.raises(ValueError, match=r"reference_labels\[1\]\['Edema'\] = 2"):
        clinical_efficacy([{}, {}], [{}, {"Edema": 2}])
    with pytest.raises(ValueError, match="2 predicted label sets but 1"):
        clinical_efficacy([{}, {}], [{}])
