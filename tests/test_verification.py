"""Verified decoding: a report keeps only the sentences that agree with its clue decisions and with the
sentences before it (the check ships with the remote code)."""

import pytest
import torch

from trrg.modeling.labeler_trrg import label_sentences
from trrg.modeling.verification_trrg import missing_clues, verify_sentences

CLUES = {"Pneumothorax": True, "Lung Lesion": True, "Edema": False, "Pleural Effusion": False}


def _verify(report, clues=CLUES):
    kept, rejected = verify_sentences(label_sentences(report), clues)
    return kept, [(r.reason, r.observation) for r in rejected]


def test_a_sentence_against_the_clues_or_an_earlier_one_is_dropped():
    kept, rejected = _verify("small left pneumothorax . moderate pulmonary edema . no pneumothorax . "
                             "a 6 mm nodule in the left lower lobe . no other pulmonary nodules . no pleural effusion .")
    assert kept == ["small left pneumothorax", "a 6 mm nodule in the left lower lobe", "no other pulmonary nodules",
                    "no pleural effusion"]
    assert rejected == [("unsupported", "Edema"), ("negates_clue", "Pneumothorax")]
    # without clue decisions only the report's own consistency is checked
    kept, rejected = _verify("small left pneumothorax . no pneumothorax . possible pulmonary edema .", clues=None)
    assert kept == ["small left pneumothorax", "possible pulmonary edema"] and rejected == [("contradicts", "Pneumothorax")]


def test_the_pipeline_verifies_by_default_and_says_what_it_left_out(tiny_finetune_model):
    from conftest import xray_like
    from trrg.modeling.pipeline_trrg import TRRGStudyPerception, verified_report

    perception = TRRGStudyPerception(disease_probs={}, clues={"Pneumothorax": False}, clue_thresholds={})
    report = verified_report("small left pneumothorax . the heart is normal in size .", perception)
    assert report.report == "the heart is normal in size ." and report.rejected[0].reason == "unsupported"
    assert report.to_dict()["rejected_sentences"] == [{"text": "small left pneumothorax", "reason": "unsupported",
                                                       "observation": "Pneumothorax"}]
    model, processor = tiny_finetune_model
    reporter = model.report_pipeline(processor)
    study = [xray_like(1), xray_like(2)]
    checked, unchecked = reporter(study, max_new_tokens=12), reporter(study, max_new_tokens=12, verify=False)
    kept = [text for text, _ in label_sentences(unchecked.report) if text not in {r.text for r in checked.rejected}]
    written = [sentence.text for sentence in checked.sentences]
    assert unchecked.rejected == [] and [text for text in written if text in kept] == kept
    # any other sentence is clue completion: it states a clue the kept sentences left out
    left_out = missing_clues(label_sentences(" ".join(f"{text} ." for text in kept)), checked.perception.clues)
    for text in written:
        if text not in kept:
            _, labels = label_sentences(text + " .")[0]
            assert any(labels.get(name) in (1, -1) for name in left_out)


# ---------------------------------------------------------------------------------------------
# Clue completion: a present clue no sentence states gets the writer's alternative sentence about it
# ---------------------------------------------------------------------------------------------


def test_an_alternative_is_inserted_at_its_boundary_when_it_states_a_missing_clue_and_breaks_no_rule():
    from trrg.modeling.pipeline_trrg import completed_sentences

    sentences = ["the heart is normal in size", "no pleural effusion", "the osseous structures are intact"]
    alternatives = [(1, "no pneumothorax"),  # negates the present clue
                    (1, "moderate pulmonary edema"),  # affirms an absent one
                    (3, "small left pleural effusion and a small left pneumothorax"),  # against "no pleural effusion"
                    (0, "the lungs are clear"),  # states nothing missing
                    (1, "small left apical pneumothorax"),
                    (2, "tiny right pneumothorax"),  # the clue is stated by then
                    (3, "a 6 mm nodule in the left lower lobe")]
    assert completed_sentences(sentences, alternatives, CLUES) == [
        "the heart is normal in size", "small left apical pneumothorax", "no pleural effusion",
        "the osseous structures are intact", "a 6 mm nodule in the left lower lobe"]
    assert completed_sentences(sentences, alternatives[:4], CLUES) == sentences  # nothing passes: as written
    # a hedge states the clue as the drop metric reads it (uncertain counts as positive)
    assert completed_sentences([], [(0, "possible small pneumothorax")], {"Pneumothorax": True}) == [
        "possible small pneumothorax"]


def test_completion_tries_the_next_alternatives_only_for_reports_still_missing_a_clue(tiny_finetune_model, monkeypatch):
    from trrg.modeling import pipeline_trrg
    from trrg.modeling.pipeline_trrg import COMPLETION_ALTERNATIVES, TRRGReport, TRRGStudyPerception, sentences_of

    model, processor = tiny_finetune_model
    reporter = model.report_pipeline(processor)
    offered = {0: {0: [(1, "the lungs are clear")], COMPLETION_ALTERNATIVES: [(1, "small left pneumothorax")]},
               1: {0: [(0, "a 6 mm nodule in the right upper lobe"), (1, "small right pneumothorax")]}}
    asked = []

    def alternatives(rows, prompts, pieces, ranked, first, model_inputs, clues):
        asked.append((first, list(rows)))
        return {row: offered[row].get(first, []) for row in rows}

    monkeypatch.setattr(reporter, "_ranked_first_tokens", lambda rows, *rest: {row: [] for row in rows})
    monkeypatch.setattr(reporter, "_alternative_sentences", alternatives)
    perception = TRRGStudyPerception(disease_probs={}, clues=CLUES, clue_thresholds={})
    stated = TRRGStudyPerception(disease_probs={}, clues={"Pneumothorax": True}, clue_thresholds={})
    reports = [TRRGReport("no pleural effusion .", sentences_of("no pleural effusion ."), perception),
               TRRGReport("no pleural effusion .", sentences_of("no pleural effusion ."), perception),
               TRRGReport("small pneumothorax .", sentences_of("small pneumothorax ."), stated)]
    inputs = {"input_ids": torch.ones(3, 4, dtype=torch.long), "attention_mask": torch.ones(3, 4, dtype=torch.long)}
    done = reporter._complete_clues(reports, inputs, None)
    assert done[1].report == "a 6 mm nodule in the right upper lobe . no pleural effusion . small right pneumothorax ."
    # row 0: nothing in the first alternatives, so the next ones were tried; Lung Lesion stays dropped
    assert done[0].report == "no pleural effusion . small left pneumothorax ."
    assert done[2] is reports[2]  # nothing missing: never scored
    assert asked == [(0, [0, 1]), (COMPLETION_ALTERNATIVES, [0])]
    assert pipeline_trrg.COMPLETION_ALTERNATIVES >= 1


def test_alternatives_are_the_writers_own_continuations_at_each_boundary(tiny_finetune_model, monkeypatch):
    from conftest import xray_like

    from trrg.modeling import pipeline_trrg
    from trrg.modeling.pipeline_trrg import COMPLETION_ALTERNATIVES

    monkeypatch.setattr(pipeline_trrg, "COMPLETION_MIN_PROBABILITY", 1e-9)  # a random writer is near uniform

    model, processor = tiny_finetune_model
    reporter = model.report_pipeline(processor)
    inputs = reporter.preprocess([[xray_like(1), xray_like(2)], [xray_like(3)]])
    tokenizer = processor.tokenizer
    with torch.no_grad():
        clues = model.predict_clues(inputs["pixel_values"], inputs["view_mask"])
        prompt = inputs["input_ids"][1][inputs["attention_mask"][1].bool()].tolist()
        pieces = {1: [tokenizer.encode(" no pleural effusion .", add_special_tokens=False),
                      tokenizer.encode(" the heart is normal .", add_special_tokens=False)]}
        ranked = reporter._ranked_first_tokens([1], {1: prompt}, pieces, inputs, clues)
        # boundary 1 (after the first sentence): the first token it holds is never offered again
        written = pieces[1][1][0]
        assert len(ranked[1]) == 3 and all(written != token for _, token in ranked[1][1])
        sequence = prompt + pieces[1][0]
        logits = model(input_ids=torch.tensor([sequence]), view_mask=inputs["view_mask"][1:2],
                       vision_features=reporter._features_of(clues, torch.tensor([1])),
                       clue_probs=clues.disease_probs[1:2]).logits[0, -1]
        expected = torch.log_softmax(logits.float(), dim=-1)
        for score, token in ranked[1][1]:
            assert score == pytest.approx(float(expected[token]), abs=1e-4)
        found = reporter._alternative_sentences([1], {1: prompt}, pieces, ranked, 0, inputs, clues)
        score, token = ranked[1][1][0]
        generated = model.generate(input_ids=torch.tensor([sequence + [token]]), view_mask=inputs["view_mask"][1:2],
                                   vision_features=reporter._features_of(clues, torch.tensor([1])),
                                   clue_probs=clues.disease_probs[1:2], do_sample=False, max_new_tokens=24)
    continuation = processor.batch_decode(generated[:, len(sequence):])[0]  # from the alternative token on
    offered_at_1 = [text for boundary, text in found[1] if boundary == 1]
    assert len(offered_at_1) <= COMPLETION_ALTERNATIVES
    if label_sentences(continuation):
        assert label_sentences(continuation)[0][0] in offered_at_1
    else:
        assert len(offered_at_1) < COMPLETION_ALTERNATIVES
