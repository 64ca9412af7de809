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


def test_a_perception_never_trained_is_not_trusted_to_verify(tiny_finetune_model, monkeypatch):
    """A stage-2 model built without stage 1 has an all-zero prompt bank: every study gets the same clues,
    and verifying (completing) a report against them would only make it state them. Its reports are
    written as generated, say so (``verified`` False), and a warning says why; given clue_probs are
    still verified."""
    import copy

    from conftest import xray_like
    from trrg.modeling import pipeline_trrg

    model, processor = tiny_finetune_model
    assert model.perception_is_trained
    untrained = copy.deepcopy(model)
    untrained.prompt_bank.zero_()
    assert not untrained.perception_is_trained
    warned = []
    monkeypatch.setattr(pipeline_trrg.logger, "warning_once", warned.append)
    study = [xray_like(1), xray_like(2)]
    report = untrained.report_pipeline(processor)(study, max_new_tokens=12)
    as_generated = untrained.report_pipeline(processor)(study, max_new_tokens=12, verify=False)
    assert report.report == as_generated.report and not report.verified and report.to_dict()["verified"] is False
    assert warned == [pipeline_trrg.UNTRAINED_PERCEPTION]
    assert model.report_pipeline(processor)(study, max_new_tokens=12).verified  # trained: checked
    given = torch.zeros(1, len(model.config.disease_names))
    assert untrained.report_pipeline(processor)(study, max_new_tokens=12, clue_probs=given).verified


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
    from trrg.modeling.pipeline_trrg import COMPLETION_ALTERNATIVES, TRRGReport, TRRGStudyPerception, sentences_of

    model, processor = tiny_finetune_model
    reporter = model.report_pipeline(processor)
    k = COMPLETION_ALTERNATIVES
    # token t -> the sentence the writer would continue it into; starts: (effect, boundary, token)
    written_from = {1: "the lungs are clear", 2: "small left pneumothorax", 3: "a 6 mm nodule in the right upper lobe",
                    4: "small right pneumothorax"}
    driven = {0: [[(0.9 - i / 10, 1, 1) for i in range(k)] + [(0.1, 1, 2)]],  # pneumothorax only in the next round
              1: [[(0.5, 1, 4)], [(0.7, 0, 3)]]}  # one list per missing clue
    asked = []

    def alternatives(rows, prompts, pieces, starts, model_inputs, clues):
        asked.append({row: list(starts[row]) for row in rows})
        return {row: [(boundary, written_from[token]) for _, boundary, token in sorted(starts[row], reverse=True)]
                for row in rows}

    monkeypatch.setattr(reporter, "_clue_driven_tokens", lambda rows, missing, *rest: {row: driven[row] for row in rows})
    monkeypatch.setattr(reporter, "_alternative_sentences", alternatives)
    perception = TRRGStudyPerception(disease_probs={}, clues=CLUES, clue_thresholds={})
    stated = TRRGStudyPerception(disease_probs={}, clues={"Pneumothorax": True}, clue_thresholds={})
    reports = [TRRGReport("no pleural effusion .", sentences_of("no pleural effusion ."), perception),
               TRRGReport("no pleural effusion .", sentences_of("no pleural effusion ."), perception),
               TRRGReport("small pneumothorax .", sentences_of("small pneumothorax ."), stated)]
    inputs = {"input_ids": torch.ones(3, 4, dtype=torch.long), "attention_mask": torch.ones(3, 4, dtype=torch.long)}
    done = reporter._complete_clues(reports, inputs, None)
    assert done[1].report == "a 6 mm nodule in the right upper lobe . no pleural effusion . small right pneumothorax ."
    assert done[1].completed == ["a 6 mm nodule in the right upper lobe", "small right pneumothorax"]
    assert done[1].to_dict()["completed_sentences"] == done[1].completed
    # row 0: nothing in its first alternatives, so the next ones were tried; Lung Lesion stays dropped
    assert done[0].report == "no pleural effusion . small left pneumothorax ."
    assert done[2] is reports[2]  # nothing missing: never scored
    assert asked == [{0: driven[0][0][:k], 1: driven[1][0] + driven[1][1]}, {0: driven[0][0][k : 2 * k]}]


def test_the_starts_are_the_first_tokens_a_missing_clue_drives_most(tiny_finetune_model, monkeypatch):
    from conftest import xray_like

    from trrg.modeling import pipeline_trrg
    from trrg.modeling.pipeline_trrg import COMPLETION_ALTERNATIVES

    monkeypatch.setattr(pipeline_trrg, "COMPLETION_MIN_PROBABILITY", 1e-9)  # a random writer is near uniform
    model, processor = tiny_finetune_model
    reporter = model.report_pipeline(processor)
    inputs = reporter.preprocess([[xray_like(1), xray_like(2)], [xray_like(3)]])
    tokenizer, names = processor.tokenizer, list(model.config.disease_names)
    with torch.no_grad():
        clues = model.predict_clues(inputs["pixel_values"], inputs["view_mask"])
        prompt = inputs["input_ids"][1][inputs["attention_mask"][1].bool()].tolist()
        pieces = {1: [tokenizer.encode(" no pleural effusion .", add_special_tokens=False),
                      tokenizer.encode(" the heart is normal .", add_special_tokens=False)]}

        def next_token_logprobs(sequence, probs):
            logits = model(input_ids=torch.tensor([sequence]), view_mask=inputs["view_mask"][1:2],
                           vision_features=reporter._features_of(clues, torch.tensor([1])), clue_probs=probs).logits
            return torch.log_softmax(logits[0, -1].float(), dim=-1)

        present = clues.disease_probs[1:2].clone()
        present[0, names.index("Edema")] = 1.0
        absent = present.clone()
        absent[0, names.index("Edema")] = 0.0
        clues.disease_probs[1] = present[0]  # the study's perception, with the clue present
        driven = reporter._clue_driven_tokens([1], {1: ["Edema"]}, {1: prompt}, pieces, inputs, clues)
        [starts] = driven[1]
        assert len(starts) == 2 * COMPLETION_ALTERNATIVES
        assert [effect for effect, _, _ in starts] == sorted((effect for effect, _, _ in starts), reverse=True)
        boundary_prefix = {0: prompt, 1: prompt + pieces[1][0], 2: prompt + pieces[1][0] + pieces[1][1]}
        written = {0: pieces[1][0][0], 1: pieces[1][1][0], 2: tokenizer.eos_token_id}
        for effect, boundary, token in starts:
            sequence = boundary_prefix[boundary]
            expected = next_token_logprobs(sequence, present)[token] - next_token_logprobs(sequence, absent)[token]
            assert effect == pytest.approx(float(expected), abs=1e-4) and token != written[boundary]
        # nothing any other start offers is driven more
        best = max(float((next_token_logprobs(seq, present) - next_token_logprobs(seq, absent))
                         .index_fill(0, torch.tensor([written[b], tokenizer.eos_token_id, tokenizer.pad_token_id,
                                                      *reporter._placeholder_ids()]), -1e9).max())
                   for b, seq in boundary_prefix.items())
        assert starts[0][0] == pytest.approx(best, abs=1e-4)
        found = reporter._alternative_sentences([1], {1: prompt}, pieces, {1: starts[:1]}, inputs, clues)
        effect, boundary, token = starts[0]
        generated = model.generate(input_ids=torch.tensor([boundary_prefix[boundary] + [token]]),
                                   view_mask=inputs["view_mask"][1:2],
                                   vision_features=reporter._features_of(clues, torch.tensor([1])),
                                   clue_probs=present, do_sample=False, max_new_tokens=24)
    continuation = processor.batch_decode(generated[:, len(boundary_prefix[boundary]):])[0]  # from the start token on
    sentences = label_sentences(continuation)
    if sentences and "." in continuation:
        assert found[1] == [(boundary, sentences[0][0])]
    else:
        assert found[1] == []


def test_the_space_says_what_verified_decoding_changed():
    from trrg.modeling.pipeline_trrg import TRRGReport, TRRGStudyPerception, sentences_of
    from trrg.modeling.verification_trrg import RejectedSentence

    evidence = pytest.importorskip("trrg.space.evidence")
    perception = TRRGStudyPerception(disease_probs={}, clues=CLUES, clue_thresholds={})
    text = "small left pneumothorax . no pleural effusion ."
    assert evidence.verification_note(TRRGReport(text, sentences_of(text), perception, verified=True)) == ""
    changed = TRRGReport(text, sentences_of(text), perception,
                         [RejectedSentence("moderate pulmonary edema", "unsupported", "Edema")], ["small left pneumothorax"],
                         verified=True)
    note = evidence.verification_note(changed)
    assert '"moderate pulmonary edema"' in note and "clue is absent (Edema)" in note
    assert 'added "small left pneumothorax"' in note
    # the Space always verifies: a report that was not is one of a model whose perception was never trained
    unchecked = evidence.verification_note(TRRGReport(text, sentences_of(text), perception))
    assert "**Not verified**" in unchecked and "never trained" in unchecked
