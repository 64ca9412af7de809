"""Verified decoding: a report keeps only the sentences that agree with its clue decisions and with the
sentences before it (the check ships with the remote code)."""

from trrg.modeling.labeler_trrg import label_sentences
from trrg.modeling.verification_trrg import verify_sentences

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
    assert unchecked.rejected == [] and checked.report == " ".join(
        f"{text} ." for text, labels in label_sentences(unchecked.report)
        if text not in {r.text for r in checked.rejected}) or checked.report == unchecked.report
