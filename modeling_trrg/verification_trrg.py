"""Verified decoding: a generated report keeps only the sentences that agree with the model's own clue
decisions and with the sentences before them.

Part of the hub bundle (remote code): imports only the standard library and sibling files, so a user
who loaded the model with ``trust_remote_code=True`` gets the same check.

The language model is trained to write what its clues say, but at small budgets it still drops some
clues, writes findings without one and, now and then, affirms a finding in one sentence and negates it
in another. Each generated sentence is labelled (the CheXpert-style labeler, ``labeler_trrg``) and
rejected when it

- states a finding positive whose clue is absent (``unsupported``),
- negates a finding whose clue is present (``negates_clue``), or
- affirms or negates a finding that an earlier kept sentence stated the other way (``contradicts``).

A rejected sentence is dropped (the rest of the report stands). Dropping cannot state a clue the writer
left out: ``missing_clues`` names the present clues no kept sentence states, and the report pipeline
asks the writer for one more sentence about them (``TRRGReportPipeline``'s clue completion), each
candidate checked by the same rules before it is appended. A negation qualified by "other",
"otherwise", "additional", "further", "acute", "new", "focal" or "elsewhere" ("no other nodules") does
not negate what another sentence affirms. Uncertain mentions ("possible atelectasis") pass: a hedge
neither affirms nor denies a clue.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .labeler_trrg import NEGATIVE, NO_FINDING, POSITIVE

# Radiology's idioms for "nothing beyond what was said": such a negation leaves room for a finding
# another sentence states ("a 6 mm nodule ... no other nodules", "healed rib fractures ... no acute
# osseous abnormality", "scarring ... no focal airspace disease").
QUALIFIED_NEGATION = re.compile(r"\b(other|otherwise|additional|further|acute|new|focal|elsewhere)\b")


@dataclass
class RejectedSentence:
    text: str
    reason: str  # "unsupported", "negates_clue" or "contradicts"
    observation: str


def negates(text: str, labels: Mapping[str, int | None], observation: str) -> bool:
    """Whether the sentence denies ``observation`` outright (not a qualified negation)."""
    return labels.get(observation) == NEGATIVE and not QUALIFIED_NEGATION.search(text.lower())


def violation(text: str, labels: Mapping[str, int | None], clues: Mapping[str, bool] | None,
              stated: Mapping[str, int]) -> tuple[str, str] | None:
    """(reason, observation) of the first rule the sentence breaks, or None. ``clues``: observation ->
    present (None: no clue decisions, only self-consistency is checked); ``stated``: what the kept
    sentences before it said (observation -> POSITIVE or NEGATIVE)."""
    for observation, label in labels.items():
        if observation == NO_FINDING or label is None:
            continue
        denied = negates(text, labels, observation)
        if clues is not None and observation in clues:
            if label == POSITIVE and not clues[observation]:
                return "unsupported", observation
            if denied and clues[observation]:
                return "negates_clue", observation
        if (label == POSITIVE and stated.get(observation) == NEGATIVE) or (denied and stated.get(observation) == POSITIVE):
            return "contradicts", observation
    return None


def record_statements(stated: dict[str, int], text: str, labels: Mapping[str, int | None]) -> None:
    """Add what a kept sentence states to ``stated``, as the contradiction rule reads it: an affirmation
    (it wins), an outright denial (unless something was stated before); hedges state nothing."""
    for observation, label in labels.items():
        if label == POSITIVE:
            stated[observation] = POSITIVE
        elif negates(text, labels, observation):
            stated.setdefault(observation, NEGATIVE)


def statements(sentences: Sequence[tuple[str, Mapping[str, int | None]]]) -> dict[str, int]:
    """What kept sentences state, for the contradiction rule (``record_statements``)."""
    stated: dict[str, int] = {}
    for text, labels in sentences:
        record_statements(stated, text, labels)
    return stated


def stated_observations(sentences: Sequence[tuple[str, Mapping[str, int | None]]]) -> dict[str, int]:
    """What the sentences state, in order: observation -> POSITIVE (an affirmation or a hedge, which wins
    over an earlier negation) or NEGATIVE (an outright denial)."""
    stated: dict[str, int] = {}
    for text, labels in sentences:
        for observation, label in labels.items():
            if observation == NO_FINDING or label is None:
                continue
            if label != NEGATIVE:
                stated[observation] = POSITIVE
            elif negates(text, labels, observation):
                stated.setdefault(observation, NEGATIVE)
    return stated


def missing_clues(sentences: Sequence[tuple[str, Mapping[str, int | None]]], clues: Mapping[str, bool]) -> list[str]:
    """The present clues (``NO_FINDING`` aside) that no sentence affirms or hedges: what a report drops."""
    stated = stated_observations(sentences)
    return [name for name, present in clues.items()
            if present and name != NO_FINDING and stated.get(name) != POSITIVE]


def verify_sentences(sentences: Sequence[tuple[str, Mapping[str, int | None]]],
                     clues: Mapping[str, bool] | None) -> tuple[list[str], list[RejectedSentence]]:
    """Split labelled sentences into those kept (in order) and those rejected, with the reason."""
    kept, rejected, stated = [], [], {}
    for text, labels in sentences:
        broken = violation(text, labels, clues, stated)
        if broken is not None:
            rejected.append(RejectedSentence(text, *broken))
            continue
        kept.append(text)
        record_statements(stated, text, labels)
    return kept, rejected
