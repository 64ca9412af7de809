"""score_reports, the `trrg score` CLI and the `evaluate` modules loaded by path."""

import json

import pytest

from trrg.evaluation import metric_path
from trrg.evaluation.nlg import nlg_scores
from trrg.commands.score import main
from trrg.evaluation.score import metric_tokens, score_reports

PREDICTIONS = {
    "s1": "Heart size is enlarged. Small left pleural effusion.",
    "s2": "No acute cardiopulmonary process.",
    "s3": "No pneumothorax. Lungs are clear.",
}
REFERENCES = {
    "s1": ["Cardiomegaly. Small left pleural effusion.", "The heart is enlarged. Left effusion."],
    "s2": "Mild pulmonary edema. No pleural effusion.",
    "s3": "Lungs are clear. No pneumothorax.",
}
IDS = list(PREDICTIONS)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_score_reports_nlg_equals_nlg_scores_on_cleaned_tokens():
    scores = score_reports([PREDICTIONS[i] for i in IDS], [REFERENCES[i] for i in IDS], meteor=False)
    refs = {i: [REFERENCES[i]] if isinstance(REFERENCES[i], str) else REFERENCES[i] for i in IDS}
    expected = nlg_scores(
        {i: [metric_tokens(PREDICTIONS[i])] for i in IDS},
        {i: [metric_tokens(ref) for ref in refs[i]] for i in IDS},
        meteor=False,
    )
    assert {key: scores[key] for key in expected} == expected
    assert metric_tokens("Heart size normal. No effusion.") == "heart size normal . no effusion ."
    assert scores["n"] == 3 and scores["text_cleaning"] == "r2gen" and scores["uncertain"] == "positive"
    # s2's reference has edema, its report states no disease.
    assert scores["ce_normal_collapse"] == pytest.approx(1 / 2)
    assert "ce_f1/Pleural Effusion" in scores and "ce_example_f1" in scores


def test_text_cleaning_none_keeps_case_and_punctuation():
    cleaned = score_reports(["No effusion."], ["no effusion ."], meteor=False)
    raw = score_reports(["No effusion."], ["no effusion ."], text_cleaning="none", meteor=False)
    assert cleaned["bleu_1"] == pytest.approx(1.0)
    assert raw["bleu_1"] < 0.1 and raw["text_cleaning"] == "none"


def test_cli_matches_ids_not_line_order(tmp_path, capsys):
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"id": i, "report": PREDICTIONS[i]} for i in reversed(IDS)])
    references = write_jsonl(tmp_path / "r.jsonl", [{"id": i, "report": REFERENCES[i]} for i in IDS])
    out = tmp_path / "metrics" / "m.json"
    argv = ["--predictions", str(predictions), "--references", str(references), "--out", str(out), "--no-meteor"]
    assert main(argv + ["--uncertain", "negative"]) == 0
    written = json.loads(out.read_text())
    expected = score_reports(
        [PREDICTIONS[i] for i in IDS], [REFERENCES[i] for i in IDS], uncertain="negative", meteor=False
    )
    assert isinstance(written.pop("self_contradiction_examples"), list)  # written beside the metrics
    assert written == pytest.approx(expected)
    assert "ce_micro_f1_14" in capsys.readouterr().out


def test_cli_names_a_missing_id(tmp_path, capsys):
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"id": i, "report": PREDICTIONS[i]} for i in IDS[:2]])
    references = write_jsonl(tmp_path / "r.jsonl", [{"id": i, "report": REFERENCES[i]} for i in IDS])
    out = tmp_path / "m.json"
    assert main(["--predictions", str(predictions), "--references", str(references), "--out", str(out)]) == 1
    assert "'s3'" in capsys.readouterr().err
    assert not out.exists()


def test_cli_names_file_and_line_of_a_malformed_line(tmp_path, capsys):
    predictions = tmp_path / "p.jsonl"
    predictions.write_text('{"id": "s1", "report": "ok"}\n{"id": "s2", "report": \n')
    references = write_jsonl(tmp_path / "r.jsonl", [{"id": "s1", "report": "ok"}])
    argv = ["--predictions", str(predictions), "--references", str(references), "--out", str(tmp_path / "m.json")]
    assert main(argv) == 1
    assert f"{predictions}:2" in capsys.readouterr().err


def test_evaluate_modules_load_offline_by_path_and_equal_score_reports(tmp_path, monkeypatch):
    evaluate = pytest.importorskip("evaluate")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # evaluate reads its module cache location at import time; point the loaded config at tmp_path.
    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path / "hf" / "modules")
    predictions = [PREDICTIONS[i] for i in IDS]
    references = [REFERENCES[i] if isinstance(REFERENCES[i], list) else [REFERENCES[i]] for i in IDS]

    nlg_metric = evaluate.load(metric_path("trrg_nlg"), cache_dir=str(tmp_path / "cache"))
    ce_metric = evaluate.load(metric_path("trrg_clinical_efficacy"), cache_dir=str(tmp_path / "cache"))
    results = {
        **nlg_metric.compute(predictions=predictions, references=references, meteor=False),
        **ce_metric.compute(predictions=predictions, references=references, uncertain="ignore"),
    }
    expected = score_reports(predictions, references, uncertain="ignore", meteor=False)
    assert results == pytest.approx({key: expected[key] for key in results})
    assert {key for key in expected if key.startswith(("bleu", "rouge", "cider", "ce_"))} <= set(results)
    assert not any(key.startswith(("perception_", "clue_")) for key in results)

    # The model's own perception, an optional input: the truthfulness metrics of score_reports.
    clues = [[0] * 10 + [1] + [0] * 3, [0] * 14, [1] + [0] * 13]  # s1: Pleural Effusion; s3: No Finding
    with_clues = ce_metric.compute(predictions=predictions, references=references, clues=clues)
    expected = score_reports(predictions, references, meteor=False, clues=clues)
    assert with_clues == pytest.approx({key: expected[key] for key in with_clues})
    assert {key for key in expected if key.startswith(("ce_", "perception_", "clue_"))} <= set(with_clues)
    # s1 states its effusion (kept) and cardiomegaly (no clue: unsupported); No Finding is not counted.
    assert with_clues["clue_drop_rate"] == 0.0 and with_clues["clue_present_count"] == 1
    assert with_clues["clue_unsupported_rate"] == pytest.approx(1 / 2)
    probs = [[0.9 if value else 0.1 for value in row] for row in clues]
    from_probs = ce_metric.compute(predictions=predictions, references=references, disease_probs=probs)
    assert from_probs["perception_source"] == "disease_probs" and from_probs["clue_drop_rate"] == 0.0


def test_metric_path_rejects_unknown_names():
    with pytest.raises(ValueError, match="trrg_nlg"):
        metric_path("bleu")
