"""Splits by patient: every study of a patient goes to one split, so no test patient is ever seen
in training. ``split_by_patient`` draws them (seeded, reproducible); ``check_patient_splits``
fails loudly when a patient is in two splits, whoever made the split (MIMIC's official file too)."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict

from trrg.processing.prepare.plan import PlannedStudy, PrepareError

SPLIT_NAMES = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
MAX_LISTED = 5


def check_fractions(fractions) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise PrepareError(f"--fractions {' '.join(map(str, fractions))}: give three non-negative fractions "
                           "(train val test) that sum to 1, e.g. 0.7 0.1 0.2.")
    return fractions


def split_by_patient(patients, fractions=DEFAULT_FRACTIONS, seed: int = 0) -> dict[str, str]:
    """{patient: split}. The unique patients are sorted, shuffled with ``seed`` and cut at the
    fractions (rounded; test takes the rest), so the same patients and seed give the same split."""
    fractions = check_fractions(fractions)
    unique = sorted(set(patients))
    random.Random(seed).shuffle(unique)
    n_train = round(fractions[0] * len(unique))
    n_val = min(round(fractions[1] * len(unique)), len(unique) - n_train)
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(unique))}
    return {patient: name for name, (start, end) in bounds.items() for patient in unique[start:end]}


def check_patient_splits(studies: list[PlannedStudy], source: str) -> None:
    """Raise ``PrepareError`` when any patient has studies in more than one split."""
    splits_of = defaultdict(dict)  # patient -> {split: first study id}
    for study in studies:
        splits_of[study.patient].setdefault(study.split, study.id)
    leaks = {patient: seen for patient, seen in splits_of.items() if len(seen) > 1}
    if leaks:
        shown = "; ".join(
            f"patient {patient}: " + ", ".join(f"study {study_id} in {split!r}" for split, study_id in seen.items())
            for patient, seen in list(leaks.items())[:MAX_LISTED]
        )
        raise PrepareError(
            f"{source}: {len(leaks)} patient(s) have studies in more than one split, e.g. {shown}. Splits must be "
            "by patient (a test patient seen in training inflates every metric); fix the split file."
        )


def pseudonym(value: str, salt: str) -> str:
    """A salted SHA-256 pseudonym (hex, 16 characters): the same value and salt give the same name."""
    return hashlib.sha256(f"{salt}\x00{value}".encode()).hexdigest()[:16]
