"""Report text: R2Gen-compatible cleaning, sentence splitting, metric tokens and disease prompts.

Training targets, clue prompts, the labeler and the metrics all call these functions, so a report
is cleaned and split the same way everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from trrg.modeling.constants_trrg import DEFAULT_DISEASE_PROMPTS
# The one sentence splitter lives in the hub bundle, whose labeler reads reports with it.
from trrg.modeling.labeler_trrg import split_sentences  # noqa: F401

# R2Gen's `clean_report_iu_xray` strips these characters from every sentence. The class is kept
# byte-for-byte: `:-\[` is a *range* (":" to "["), so "<", "=", ">", "@" go too while "-" and the
# digits stay (R2Gen vocabularies contain "air-space", "15").
_R2GEN_STRIP = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")
# R2Gen drops list numbering ("1. ", " 2. ") before splitting on ". ".
_R2GEN_REPLACEMENTS: tuple[tuple[str, str], ...] = (
    ("..", "."), ("..", "."), ("..", "."), ("1. ", ""),
    (". 2. ", ". "), (". 3. ", ". "), (". 4. ", ". "), (". 5. ", ". "),
    (" 2. ", ". "), (" 3. ", ". "), (" 4. ", ". "), (" 5. ", ". "),
)


def _clean_sentence(sentence: str) -> str:
    for char in ('"', "/", "\\", "'"):
        sentence = sentence.replace(char, "")
    # The final strip (not in R2Gen) makes cleaning idempotent: "no effusion ." -> "no effusion".
    return _R2GEN_STRIP.sub("", sentence.strip().lower()).strip()


def clean_report(text: str) -> str:
    """Clean a report exactly like R2Gen's ``clean_report_iu_xray``.

    Steps: collapse ``".."`` to ``"."``; drop list numbering (``"1. "``, ``" 2. "`` ... ``" 5. "``);
    lower-case; split into sentences on ``". "``; in each sentence remove ``" / \\ '`` and the
    characters of R2Gen's class ``[.,?;*!%^&_+():-\\[\\]{}]`` (hyphens and digits survive, so
    ``"1.5 cm"`` becomes ``"15 cm"`` as in R2Gen); join as ``"sent one . sent two ."``.

    Two deliberate differences, both about whitespace only: empty sentences are dropped (R2Gen's
    ``!= []`` test never fires, which leaves ``" .  ."`` runs in a few reports), and spaces left at
    a sentence's ends after punctuation removal are stripped. So the function is idempotent
    (``clean_report(clean_report(t)) == clean_report(t)``) and yields R2Gen's tokens.

    >>> clean_report("Heart size normal. No effusion, no pneumothorax.")
    'heart size normal . no effusion no pneumothorax .'
    """
    if not isinstance(text, str):
        raise TypeError(f"clean_report expects a str, got {type(text).__name__}: pass the report text")
    for old, new in _R2GEN_REPLACEMENTS:
        text = text.replace(old, new)
    sentences = (_clean_sentence(sentence) for sentence in text.strip().lower().split(". "))
    return " . ".join(sentence for sentence in sentences if sentence) + " ."


def tokenize_for_metrics(text: str) -> list[str]:
    """Word tokens for NLG metrics: the cleaned report split on spaces, ``"."`` included.

    This is what R2Gen-style evaluation scores (its BLEU/METEOR/ROUGE/CIDEr see cleaned strings),
    so generated and reference reports are compared in the same form however they were written.
    """
    return clean_report(text).split()


def disease_prompts(names: Iterable[str] | None = None) -> dict[str, tuple[str, str]]:
    """``{name: (positive prompt, negated prompt)}`` for ``names`` (default: all, CheXpert order).

    The prompts live in ``trrg.modeling.constants_trrg.DEFAULT_DISEASE_PROMPTS`` (the hub
    bundle needs them too); this is the dataset-side accessor, not a copy.
    """
    names = list(DEFAULT_DISEASE_PROMPTS) if names is None else list(names)
    unknown = [name for name in names if name not in DEFAULT_DISEASE_PROMPTS]
    if unknown:
        raise ValueError(
            f"no default prompts for {unknown}: known diseases are {list(DEFAULT_DISEASE_PROMPTS)}; "
            "pass your own prompts through the config's disease_prompts instead"
        )
    return {name: DEFAULT_DISEASE_PROMPTS[name] for name in names}
