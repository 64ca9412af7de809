"""Report cleaning, sentence splitting, metric tokens and disease prompts."""

import re

import pytest

from trrg.modeling.configuration_trrg import CHEXPERT_OBSERVATIONS, DEFAULT_DISEASE_PROMPTS
from trrg.processing.text import clean_report, disease_prompts, split_sentences, tokenize_for_metrics


def r2gen_clean_report_iu_xray(report: str) -> str:
    """R2Gen's published `clean_report_iu_xray`, restated as the oracle for compatibility."""
    report_cleaner = lambda t: (  # noqa: E731 - kept in R2Gen's shape
        t.replace("..", ".").replace("..", ".").replace("..", ".").replace("1. ", "")
        .replace(". 2. ", ". ").replace(". 3. ", ". ").replace(". 4. ", ". ").replace(". 5. ", ". ")
        .replace(" 2. ", ". ").replace(" 3. ", ". ").replace(" 4. ", ". ").replace(" 5. ", ". ")
        .strip().lower().split(". ")
    )
    sent_cleaner = lambda t: re.sub(  # noqa: E731
        r"[.,?;*!%^&_+():-\[\]{}]", "",
        t.replace('"', "").replace("/", "").replace("\\", "").replace("'", "").strip().lower(),
    )
    tokens = [sent_cleaner(sent) for sent in report_cleaner(report) if sent_cleaner(sent) != []]
    return " . ".join(tokens) + " ."


REPORTS = [
    "Heart size normal. No effusion, no pneumothorax.",
    "1. Small LEFT pleural effusion (new). 2. Mild cardiomegaly; stable.",
    "The lungs are clear.. Nodule measures 1.5 cm! Patient's 'prior' study/CT: [none] {n/a} <x> @ 50%",
    "XXXX sternotomy wires are intact. Air-space disease at the right base",
]


@pytest.mark.parametrize("report", REPORTS)
def test_clean_report_matches_r2gen(report):
    assert clean_report(report) == r2gen_clean_report_iu_xray(report)


def test_clean_report_drops_empty_sentences_unlike_r2gen():
    report = "No effusion. . Clear lungs."
    assert " .  ." in r2gen_clean_report_iu_xray(report)
    assert clean_report(report) == "no effusion . clear lungs ."


@pytest.mark.parametrize("report", REPORTS)
def test_clean_report_is_idempotent(report):
    once = clean_report(report)
    assert clean_report(once) == once


def test_clean_report_rejects_non_text():
    with pytest.raises(TypeError, match="str"):
        clean_report(None)


def test_split_sentences_on_cleaned_text():
    assert split_sentences("a b . c d .") == ["a b", "c d"]


def test_split_sentences_on_raw_text_keeps_decimals_and_drops_list_numbers():
    text = "1. Nodule of 1.5 cm in the left base. 2. No effusion!\n\n3) Mild cardiomegaly? Normal bones"
    assert split_sentences(text) == [
        "Nodule of 1.5 cm in the left base",
        "No effusion",
        "Mild cardiomegaly",
        "Normal bones",
    ]


def test_split_sentences_does_not_split_wrapped_lines():
    assert split_sentences("No pleural\neffusion. Heart normal.") == ["No pleural effusion", "Heart normal"]


def test_split_sentences_of_clean_report_round_trips():
    report = "Mild cardiomegaly. No focal consolidation, effusion or pneumothorax."
    assert " . ".join(split_sentences(clean_report(report))) + " ." == clean_report(report)


def test_tokenize_for_metrics_keeps_sentence_periods():
    assert tokenize_for_metrics("Heart normal. No effusion, lungs clear.") == [
        "heart", "normal", ".", "no", "effusion", "lungs", "clear", ".",
    ]


def test_disease_prompts_default_is_the_config_bank_in_chexpert_order():
    prompts = disease_prompts()
    assert list(prompts) == list(CHEXPERT_OBSERVATIONS)
    assert all(prompts[name] is DEFAULT_DISEASE_PROMPTS[name] for name in prompts)


def test_disease_prompts_subset_and_unknown_name():
    assert disease_prompts(["Edema"]) == {"Edema": DEFAULT_DISEASE_PROMPTS["Edema"]}
    with pytest.raises(ValueError, match="Pneumoperitoneum"):
        disease_prompts(["Pneumoperitoneum"])
