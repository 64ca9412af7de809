"""Truthfulness metrics (perception_*, clue_drop_rate, clue_unsupported_rate): hand-computed cases,
parity of perception_* with the CE scorer, the `trrg score` CLI, `evaluate_model` and the table.
(The `evaluate` module's ``clues`` input is tested in test_score_cli.py, which loads the modules once.)"""

import json

import numpy as np
import pytest

from trrg.evaluation.clinical import CHEXPERT_OBSERVATIONS, clinical_efficacy
from trrg.commands.score import main
from trrg.evaluation.score import score_reports
from trrg.evaluation.truthfulness import (
    CLUE_OBSERVATIONS,
    clue_decisions,
    clue_faithfulness,
    perception_efficacy,
    truthfulness_scores,
)

INDEX = {name: j for j, name in enumerate(CHEXPERT_OBSERVATIONS)}


def vector(*names, value=1, default=0):
    out = [default] * len(CHEXPERT_OBSERVATIONS)
    for name in names:
        out[INDEX[name]] = value
    return out


# Three studies, clue decisions vs the labels of the generated report:
#   study 0: clue Effusion + Cardiomegaly; report "no effusion", cardiomegaly  -> Effusion dropped
#   study 1: clue No Finding only; report states a pneumothorax                -> Pneumothorax unsupported
#            (No Finding is not one of the 13: its clue is neither present nor dropped)
#   study 2: clue Edema + Support Devices; report hedges edema, states the device
DECISIONS = [
    vector("Pleural Effusion", "Cardiomegaly"),
    vector("No Finding"),
    vector("Edema", "Support Devices"),
]
REPORT_LABELS = [
    {"Pleural Effusion": 0, "Cardiomegaly": 1},
    {"Pneumothorax": 1},
    {"Edema": -1, "Support Devices": 1},
]


def test_clue_observations_are_the_13_findings():
    assert len(CLUE_OBSERVATIONS) == 13 and "No Finding" not in CLUE_OBSERVATIONS
    assert "Support Devices" in CLUE_OBSERVATIONS


def test_hand_computed_drop_and_unsupported_uncertain_positive():
    scores = clue_faithfulness(DECISIONS, REPORT_LABELS, "positive")
    # Present: Effusion, Cardiomegaly (study 0), Edema, Support Devices (study 2); dropped: Effusion.
    assert (scores["clue_drop_count"], scores["clue_present_count"]) == (1, 4)
    assert scores["clue_drop_rate"] == pytest.approx(1 / 4)
    # Stated positive: Cardiomegaly, Pneumothorax, Edema (hedged = positive), Support Devices;
    # unsupported: Pneumothorax.
    assert (scores["clue_unsupported_count"], scores["clue_report_positive_count"]) == (1, 4)
    assert scores["clue_unsupported_rate"] == pytest.approx(1 / 4)
    assert scores["clue_drop_rate/Pleural Effusion"] == 1.0 and scores["clue_present_count/Pleural Effusion"] == 1
    assert scores["clue_drop_rate/Cardiomegaly"] == 0.0 and scores["clue_drop_rate/Edema"] == 0.0
    assert scores["clue_unsupported_rate/Pneumothorax"] == 1.0
    assert scores["clue_report_positive_count/Pneumothorax"] == 1
    assert scores["clue_drop_rate/Pneumothorax"] is None and scores["clue_present_count/Pneumothorax"] == 0
    assert scores["clue_drop_rate/Fracture"] is None and scores["clue_unsupported_rate/Fracture"] is None
    assert not any("No Finding" in key for key in scores)
    assert {key.split("/")[1] for key in scores if "/" in key} == set(CLUE_OBSERVATIONS)


def test_uncertain_policy_applies_to_the_report():
    negative = clue_faithfulness(DECISIONS, REPORT_LABELS, "negative")
    # The hedged Edema no longer states it: a second drop, and one fewer stated positive.
    assert (negative["clue_drop_count"], negative["clue_present_count"]) == (2, 4)
    assert (negative["clue_unsupported_count"], negative["clue_report_positive_count"]) == (1, 3)
    assert negative["clue_drop_rate/Edema"] == 1.0
    ignore = clue_faithfulness(DECISIONS, REPORT_LABELS, "ignore")
    # The (study 2, Edema) pair is left out of every count.
    assert (ignore["clue_drop_count"], ignore["clue_present_count"]) == (1, 3)
    assert (ignore["clue_unsupported_count"], ignore["clue_report_positive_count"]) == (1, 3)
    assert ignore["clue_drop_rate/Edema"] is None and ignore["clue_present_count/Edema"] == 0


def test_zero_denominators_are_none_with_count_zero():
    scores = clue_faithfulness([vector("No Finding"), vector()], [{"No Finding": 1}, {"Edema": 0}])
    assert scores["clue_drop_rate"] is None and scores["clue_present_count"] == 0 and scores["clue_drop_count"] == 0
    assert scores["clue_unsupported_rate"] is None and scores["clue_report_positive_count"] == 0
    assert not any(isinstance(value, float) and np.isnan(value) for value in scores.values())


def test_perception_hand_computed():
    # Clue decisions vs references: Effusion TP (study 0), Cardiomegaly FP (study 0), Atelectasis FN (study 1).
    references = [{"Pleural Effusion": 1}, {"Atelectasis": 1}]
    decisions = [vector("Pleural Effusion", "Cardiomegaly"), vector()]
    scores = perception_efficacy(decisions, references)
    assert scores["perception_micro_f1_14"] == pytest.approx(2 / (2 + 1 + 1))
    assert scores["perception_macro_classes_14"] == 3
    assert scores["perception_macro_f1_14"] == pytest.approx(1 / 3)
    assert scores["perception_macro_f1_5"] == pytest.approx(1 / 3)
    assert scores["perception_f1/Pleural Effusion"] == 1.0 and scores["perception_f1/Cardiomegaly"] == 0.0
    assert scores["perception_f1/Fracture"] is None


@pytest.mark.parametrize("uncertain", ["positive", "negative", "ignore"])
def test_perception_equals_ce_of_the_decisions_as_report_labels(uncertain):
    rng = np.random.default_rng(1)
    decisions = rng.integers(0, 2, size=(30, 14))
    references = [{name: [-1, 0, 1, None][rng.integers(4)] for name in CHEXPERT_OBSERVATIONS} for _ in range(30)]
    as_labels = [dict(zip(CHEXPERT_OBSERVATIONS, map(int, row))) for row in decisions]
    ce = clinical_efficacy(as_labels, references, uncertain)
    perception = perception_efficacy(decisions, references, uncertain)
    renamed = {"perception_" + key.removeprefix("ce_"): value for key, value in ce.items()}
    assert perception == pytest.approx({key: renamed[key] for key in perception})
    kinds = ("ce_micro", "ce_macro", "ce_precision/", "ce_recall/", "ce_f1/")
    expected_keys = {key for key in ce if key.startswith(kinds)}
    assert {"ce_" + key.removeprefix("perception_") for key in perception} == expected_keys


def test_truthfulness_scores_is_both():
    references = [{"Pleural Effusion": 1}, {}, {"Edema": 1}]
    scores = truthfulness_scores(DECISIONS, REPORT_LABELS, references)
    assert scores == {**perception_efficacy(DECISIONS, references), **clue_faithfulness(DECISIONS, REPORT_LABELS)}


def test_clue_decisions_sources_and_threshold():
    probs = [[0.5] + [0.4999] * 13, [0.9] * 14]
    matrix, protocol = clue_decisions(disease_probs=probs)
    assert protocol == {"perception_source": "disease_probs", "perception_threshold": 0.5}
    assert matrix[0].tolist() == vector("No Finding") and matrix[1].tolist() == [1] * 14  # p >= 0.5
    matrix, protocol = clue_decisions(disease_probs=probs, threshold=0.95)
    assert matrix.sum() == 0 and protocol["perception_threshold"] == 0.95
    # clues win over disease_probs, and the threshold does not apply to them
    clues = [vector("Edema"), vector()]
    matrix, protocol = clue_decisions(clues, probs, threshold=0.1)
    assert matrix.tolist() == clues and protocol == {"perception_source": "clues", "perception_threshold": None}
    assert clue_decisions([None, None], [None, None]) == (None, {})
    assert clue_decisions() == (None, {})


def test_clue_decisions_errors_name_the_study():
    with pytest.raises(ValueError, match=r"b\.jsonl:2 has no \"clues\" but a\.jsonl:1 has"):
        clue_decisions([vector(), None], names=["a.jsonl:1", "b.jsonl:2"])
    with pytest.raises(ValueError, match=r"study 0 has no \"disease_probs\" but study 1 has"):
        clue_decisions(disease_probs=[None, [0.1] * 14])
    # some rows with clues, others with only disease_probs: an error, not a silent mix of rules
    with pytest.raises(ValueError, match='study 1 has no "clues"'):
        clue_decisions([vector(), None], [[0.1] * 14, [0.1] * 14])
    with pytest.raises(ValueError, match=r"study 0: \"clues\" must hold 0 or 1.*0.7.*'No Finding'"):
        clue_decisions([[0.7] + [0] * 13])
    with pytest.raises(ValueError, match='"clues" must be a list of 14'):
        clue_decisions([[0, 1]])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*1.5"):
        clue_decisions(disease_probs=[[1.5] * 14])
    with pytest.raises(ValueError, match="threshold"):
        clue_decisions(disease_probs=[[0.1] * 14], threshold=2)


# ------------------------------------------------------------------ through score_reports / CLI

# Real texts through the project's labeler.
#   s1: clue Effusion, report "No pleural effusion."                      -> dropped
#   s2: no clue, report states a pneumothorax                             -> unsupported
#   s3: clue Cardiomegaly + Effusion, report states both                  -> kept
PREDICTIONS = {
    "s1": "No pleural effusion.",
    "s2": "There is a pneumothorax.",
    "s3": "Heart size is enlarged. Small left pleural effusion.",
}
REFERENCES = {
    "s1": "Small right pleural effusion.",
    "s2": "No acute cardiopulmonary process.",
    "s3": ["Cardiomegaly. No effusion.", "Enlarged heart."],
}
CLUES = {"s1": vector("Pleural Effusion"), "s2": vector(), "s3": vector("Cardiomegaly", "Pleural Effusion")}
PROBS = {"s1": vector("Pleural Effusion", value=0.8, default=0.2), "s2": vector("No Finding", value=0.0, default=0.6),
         "s3": vector("Cardiomegaly", "Pleural Effusion", value=0.55, default=0.05)}
IDS = list(PREDICTIONS)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def cli_args(predictions, references, out):
    return ["--predictions", str(predictions), "--references", str(references), "--out", str(out), "--no-meteor"]


def test_score_reports_with_clues_hand_computed():
    scores = score_reports([PREDICTIONS[i] for i in IDS], [REFERENCES[i] for i in IDS], meteor=False,
                           clues=[CLUES[i] for i in IDS])
    assert (scores["clue_drop_count"], scores["clue_present_count"]) == (1, 3)
    assert scores["clue_drop_rate"] == pytest.approx(1 / 3)
    assert scores["clue_drop_rate/Pleural Effusion"] == pytest.approx(1 / 2)
    assert (scores["clue_unsupported_count"], scores["clue_report_positive_count"]) == (1, 3)
    assert scores["clue_unsupported_rate/Pneumothorax"] == 1.0
    assert scores["perception_source"] == "clues" and scores["perception_threshold"] is None
    # perception = CE of the clue vectors as a report's labels, against the first reference's labels
    from trrg.processing.labeler import label_reports

    first = [REFERENCES[i] if isinstance(REFERENCES[i], str) else REFERENCES[i][0] for i in IDS]
    as_labels = [dict(zip(CHEXPERT_OBSERVATIONS, CLUES[i])) for i in IDS]
    ce = clinical_efficacy(as_labels, label_reports(first))
    for key in ("micro_f1_14", "macro_f1_14", "macro_f1_5", "f1/Pleural Effusion", "f1/Cardiomegaly"):
        assert scores[f"perception_{key}"] == pytest.approx(ce[f"ce_{key}"])
    # s1 effusion TP, s3 effusion FP (reference "No effusion"), s3 cardiomegaly TP, s2 No Finding FN
    assert scores["perception_f1/Pleural Effusion"] == pytest.approx(2 / 3)
    # the report side is unchanged by the clues
    plain = score_reports([PREDICTIONS[i] for i in IDS], [REFERENCES[i] for i in IDS], meteor=False)
    assert {key: scores[key] for key in plain} == pytest.approx(plain)
    assert not any(key.startswith(("perception_", "clue_")) for key in plain)


def test_score_reports_disease_probs_fallback_equals_thresholded_clues():
    predictions, references = [PREDICTIONS[i] for i in IDS], [REFERENCES[i] for i in IDS]
    from_probs = score_reports(predictions, references, meteor=False, disease_probs=[PROBS[i] for i in IDS])
    # at 0.5, PROBS decide s1 Effusion; s2 everything but No Finding; s3 Cardiomegaly + Effusion
    thresholded = [CLUES["s1"], vector("No Finding", value=0, default=1), CLUES["s3"]]
    from_clues = score_reports(predictions, references, meteor=False, clues=thresholded)
    assert from_probs["perception_source"] == "disease_probs" and from_probs["perception_threshold"] == 0.5
    drop = {key: value for key, value in from_probs.items() if key not in ("perception_source", "perception_threshold")}
    assert drop == pytest.approx({key: from_clues[key] for key in drop})
    assert from_probs["clue_present_count"] == 1 + 13 + 2


def test_cli_with_clues_equals_score_reports(tmp_path, capsys):
    rows = [{"id": i, "report": PREDICTIONS[i], "disease_probs": PROBS[i], "clues": CLUES[i]} for i in reversed(IDS)]
    predictions = write_jsonl(tmp_path / "p.jsonl", rows)
    references = write_jsonl(tmp_path / "r.jsonl", [{"id": i, "report": REFERENCES[i]} for i in IDS])
    out = tmp_path / "m.json"
    argv = ["--predictions", str(predictions), "--references", str(references), "--out", str(out), "--no-meteor"]
    assert main(argv + ["--perception-threshold", "0.9"]) == 0  # ignored: the rows carry clues
    written = json.loads(out.read_text())
    expected = score_reports([PREDICTIONS[i] for i in IDS], [REFERENCES[i] for i in IDS], meteor=False,
                             clues=[CLUES[i] for i in IDS])
    assert isinstance(written.pop("self_contradiction_examples"), list)  # written beside the metrics
    assert written == pytest.approx(expected)
    assert written["clue_drop_rate"] == pytest.approx(1 / 3) and written["perception_threshold"] is None
    assert "clue_drop_rate" in capsys.readouterr().out


def test_cli_disease_probs_only_uses_the_threshold(tmp_path):
    rows = [{"id": i, "report": PREDICTIONS[i], "disease_probs": PROBS[i]} for i in IDS]
    predictions = write_jsonl(tmp_path / "p.jsonl", rows)
    references = write_jsonl(tmp_path / "r.jsonl", [{"id": i, "report": REFERENCES[i]} for i in IDS])
    argv = ["--predictions", str(predictions), "--references", str(references), "--no-meteor"]
    assert main(argv + ["--out", str(tmp_path / "default.json")]) == 0
    default = json.loads((tmp_path / "default.json").read_text())
    assert default["perception_source"] == "disease_probs" and default["perception_threshold"] == 0.5
    assert default["clue_present_count"] == 16
    assert main(argv + ["--out", str(tmp_path / "high.json"), "--perception-threshold", "0.7"]) == 0
    high = json.loads((tmp_path / "high.json").read_text())
    # at 0.7 only s1's effusion (0.8) is a clue, and the report drops it
    assert high["perception_threshold"] == 0.7
    assert (high["clue_drop_count"], high["clue_present_count"]) == (1, 1)
    assert high["clue_unsupported_count"] == 3


def test_cli_without_perception_has_no_truthfulness_keys(tmp_path):
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"id": i, "report": PREDICTIONS[i]} for i in IDS])
    references = write_jsonl(tmp_path / "r.jsonl", [{"id": i, "report": REFERENCES[i]} for i in IDS])
    out = tmp_path / "m.json"
    assert main(cli_args(predictions, references, out)) == 0
    written = json.loads(out.read_text())
    assert "ce_macro_f1_14" in written
    assert not any(key.startswith(("perception_", "clue_")) for key in written)


def test_cli_mixed_rows_name_the_line_and_id(tmp_path, capsys):
    rows = [{"id": "s1", "report": PREDICTIONS["s1"], "clues": CLUES["s1"]},
            {"id": "s2", "report": PREDICTIONS["s2"], "disease_probs": PROBS["s2"]},
            {"id": "s3", "report": PREDICTIONS["s3"], "clues": CLUES["s3"]}]
    predictions = write_jsonl(tmp_path / "p.jsonl", rows)
    references = write_jsonl(tmp_path / "r.jsonl", [{"id": i, "report": REFERENCES[i]} for i in IDS])
    out = tmp_path / "m.json"
    assert main(cli_args(predictions, references, out)) == 1
    error = capsys.readouterr().err
    assert f"{predictions}:2 (id 's2') has no \"clues\"" in error
    assert not out.exists()
    rows[1]["clues"] = [0.2] * 14
    write_jsonl(predictions, rows)
    assert main(cli_args(predictions, references, out)) == 1
    assert f"{predictions}:2 (id 's2'): \"clues\" must hold 0 or 1" in capsys.readouterr().err


def test_cli_rejects_a_threshold_outside_0_1(tmp_path):
    with pytest.raises(SystemExit):
        main(["--predictions", "p", "--references", "r", "--out", str(tmp_path / "m"), "--perception-threshold", "1.5"])


# ------------------------------------------------------------------ trrg evaluate, table, evaluate module


def test_evaluate_model_carries_the_metrics(tmp_path, monkeypatch):
    import trrg.evaluation.generation as generation
    from trrg.evaluation.generation import evaluate_model

    rows = [{"id": i, "report": REFERENCES[i] if isinstance(REFERENCES[i], str) else REFERENCES[i][0]} for i in IDS]
    generated = [{"id": i, "report": PREDICTIONS[i], "disease_probs": PROBS[i], "clues": CLUES[i]} for i in IDS]
    monkeypatch.setattr(generation, "generate_reports", lambda *args, **kwargs: [dict(p) for p in generated])
    metrics = evaluate_model(None, None, rows, tmp_path / "eval", meteor=False, progress=False)
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["clue_drop_rate"] == pytest.approx(1 / 3) and metrics["clue_present_count"] == 3
    assert written["perception_source"] == "clues"
    expected = score_reports([p["report"] for p in generated], [r["report"] for r in rows], meteor=False,
                             clues=[CLUES[i] for i in IDS])
    assert {key: written[key] for key in expected if key.startswith(("perception_", "clue_"))} == pytest.approx(
        {key: value for key, value in expected.items() if key.startswith(("perception_", "clue_"))})
    # an older generator: only disease_probs -> p >= perception_threshold
    monkeypatch.setattr(generation, "generate_reports",
                        lambda *args, **kwargs: [{k: v for k, v in p.items() if k != "clues"} for p in generated])
    older = evaluate_model(None, None, rows, tmp_path / "older", meteor=False, progress=False, perception_threshold=0.7)
    assert older["perception_source"] == "disease_probs" and older["clue_present_count"] == 1
    # rows with and without clues
    monkeypatch.setattr(generation, "generate_reports",
                        lambda *args, **kwargs: [generated[0], {k: v for k, v in generated[1].items() if k != "clues"}])
    with pytest.raises(ValueError, match="prediction 's2' has no \"clues\""):
        evaluate_model(None, None, rows[:2], tmp_path / "mixed", meteor=False, progress=False)


def test_metrics_table_shows_truthfulness_when_present():
    from trrg.evaluation.tables import metrics_table

    metrics = {"ce_macro_f1_14": 0.4, "perception_macro_f1_14": 0.6, "clue_drop_rate": 0.25, "clue_drop_count": 3,
               "clue_present_count": 12, "clue_unsupported_rate": None, "clue_unsupported_count": 0,
               "clue_report_positive_count": 0}
    lines = metrics_table(metrics).splitlines()
    names = [line.split()[0] for line in lines]
    assert names.index("perception_macro_f1_14") == names.index("ce_macro_f1_14") + 1
    assert any(line.split()[0] == "clue_drop_rate" and line.endswith("0.2500 (3/12)") for line in lines)
    assert any(line.split()[0] == "clue_unsupported_rate" and line.endswith("n/a (0/0)") for line in lines)
    plain = metrics_table({"ce_macro_f1_14": 0.4})
    assert "perception" not in plain and "clue_" not in plain and "ce_normal_collapse" in plain



def test_self_contradiction_counts_reports_that_affirm_and_negate_one_finding():
    from trrg.evaluation.truthfulness import self_contradiction_examples, self_contradictions

    positive, negative = {"Pneumothorax": 1}, {"Pneumothorax": 0}
    reports = [
        [("small left pneumothorax", positive), ("no pneumothorax", negative)],  # contradicts itself
        [("small left pneumothorax", positive), ("heart size normal", {"Cardiomegaly": 0})],  # two findings: fine
        [("no pneumothorax", negative), ("no pneumothorax", negative)],  # repeated negation: fine
        [("small left pneumothorax", positive), ("no other pneumothorax", negative)],  # a qualified negation
    ]
    scores = self_contradictions(reports)
    assert scores["self_contradiction_rate"] == 0.25 and scores["self_contradiction_count"] == 1
    assert scores["self_contradiction_count/Pneumothorax"] == 1 and scores["self_contradiction_count/Edema"] == 0
    assert self_contradiction_examples(reports, ["a", "b", "c", "d"]) == [
        {"id": "a", "observation": "Pneumothorax", "affirmed": "small left pneumothorax", "negated": "no pneumothorax"}]
    assert self_contradictions([])["self_contradiction_rate"] is None


def test_score_reports_labels_each_sentence_for_self_contradiction():
    from trrg.evaluation.score import score_reports

    predictions = ["a 6 mm nodule in the left lower lobe . no pulmonary nodules .",
                   "there is moderate pulmonary edema . no pleural effusion ."]
    scores = score_reports(predictions, ["no acute disease ."] * 2, meteor=False)
    assert scores["self_contradiction_rate"] == 0.5 and scores["self_contradiction_count/Lung Lesion"] == 1
