"""Verified decoding: a report keeps only the sentences that agree with its clue decisions and with the
sentences before it (the check ships with the remote code)."""

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
    assert unchecked.rejected == [] and written[: len(kept)] == kept
    # anything after the kept sentences is clue completion: each states a clue the sentences before left out
    clues = checked.perception.clues
    for position in range(len(kept), len(written)):
        before = label_sentences(" ".join(f"{text} ." for text in written[:position]))
        _, labels = label_sentences(written[position] + " .")[0]
        assert any(labels.get(name) in (1, -1) for name in missing_clues(before, clues))


# ---------------------------------------------------------------------------------------------
# Clue completion: a present clue no kept sentence states gets one more sentence from the writer
# ---------------------------------------------------------------------------------------------


def test_the_completing_sentence_states_a_missing_clue_and_breaks_no_rule():
    from trrg.modeling.pipeline_trrg import completing_sentence

    kept = "a 6 mm nodule in the left lower lobe . no pleural effusion ."
    candidates = ["no pneumothorax . heart is normal",  # negates the present clue
                  "moderate pulmonary edema . small left pneumothorax",  # only its first sentence counts: unsupported
                  "small left pleural effusion and a small left pneumothorax",  # affirms an absent clue
                  "the heart is normal in size",  # states nothing missing
                  "small left apical pneumothorax . more text",
                  "tiny right pneumothorax"]
    assert completing_sentence(candidates, kept, CLUES) == "small left apical pneumothorax"
    assert completing_sentence(candidates[:4], kept, CLUES) is None
    # a hedge states the clue as the drop metric reads it (uncertain counts as positive)
    assert completing_sentence(["possible small pneumothorax"], kept, CLUES) == "possible small pneumothorax"


def test_completion_appends_one_sentence_per_round_until_every_clue_is_stated(tiny_finetune_model, monkeypatch):
    from trrg.modeling import pipeline_trrg
    from trrg.modeling.pipeline_trrg import TRRGReport, TRRGStudyPerception, sentences_of

    model, processor = tiny_finetune_model
    reporter = model.report_pipeline(processor)
    scripted = {0: [["the heart is normal", "small left pneumothorax ."], ["a 6 mm nodule in the right upper lobe"]],
                1: [["the heart is normal"]]}
    asked = []

    def sample(rows, kept, model_inputs, clues, round_index):
        asked.append((round_index, list(rows), dict(kept)))
        return {row: scripted[row][round_index] if round_index < len(scripted[row]) else [] for row in rows}

    monkeypatch.setattr(reporter, "_sample_next_sentences", sample)
    perception = TRRGStudyPerception(disease_probs={}, clues=CLUES, clue_thresholds={})
    stated = TRRGStudyPerception(disease_probs={}, clues={"Pneumothorax": True}, clue_thresholds={})
    reports = [TRRGReport("no pleural effusion .", sentences_of("no pleural effusion ."), perception),
               TRRGReport("no pleural effusion .", sentences_of("no pleural effusion ."), perception),
               TRRGReport("small pneumothorax .", sentences_of("small pneumothorax ."), stated)]
    done = reporter._complete_clues(reports, {}, None)
    assert done[0].report == "no pleural effusion . small left pneumothorax . a 6 mm nodule in the right upper lobe ."
    assert done[1].report == "no pleural effusion ."  # no candidate stated a missing clue: left as it was
    assert done[2] is reports[2]  # nothing missing: never sampled
    assert asked == [(0, [0, 1], {0: "no pleural effusion .", 1: "no pleural effusion ."}),
                     (1, [0], {0: "no pleural effusion . small left pneumothorax ."})]
    assert pipeline_trrg.COMPLETION_ROUNDS >= 2


def test_completion_samples_from_the_kept_report_reproducibly_without_touching_the_caller_rng(tiny_finetune_model):
    import torch
    from conftest import xray_like

    model, processor = tiny_finetune_model
    reporter = model.report_pipeline(processor)
    studies = [[xray_like(1), xray_like(2)], [xray_like(3)]]
    inputs = reporter.preprocess(studies)
    with torch.no_grad():
        clues = model.predict_clues(inputs["pixel_values"], inputs["view_mask"])
    kept = {1: "no pleural effusion . the heart is normal in size ."}
    prompts, original = [], model.generate

    def recording(**kwargs):
        prompts.append(kwargs["input_ids"])
        return original(**kwargs)

    model.generate = recording
    try:
        state = torch.get_rng_state()
        with torch.no_grad():
            first = reporter._sample_next_sentences([1], kept, inputs, clues, 0)
            again = reporter._sample_next_sentences([1], kept, inputs, clues, 0)
        assert torch.equal(torch.get_rng_state(), state)
    finally:
        del model.generate
    from trrg.modeling.pipeline_trrg import COMPLETION_CANDIDATES

    assert first == again and list(first) == [1] and len(first[1]) == COMPLETION_CANDIDATES
    prompt = inputs["input_ids"][1][inputs["attention_mask"][1].bool()].tolist()
    continued = prompts[0][0].tolist()
    assert continued[: len(prompt)] == prompt  # the study's own prompt (no padding: the longest row)
    assert processor.tokenizer.decode(continued[len(prompt):]).strip() == "no pleural effusion . the heart is normal in size ."
