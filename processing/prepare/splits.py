"""Splits by patient: every study of a patient goes to one split, so no test patient is ever seen
in training. ``patient_split`` draws a patient's split from its key and the seed alone (stable: adding
or removing other studies never moves it); ``check_patient_splits`` fails loudly when a patient is in
two splits, whoever made the split (MIMIC's official file too). Also the pseudonyms of
``--pseudonymize`` and their key file (``Pseudonyms``)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from trrg.processing.files import write_csv_atomically
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


def patient_split(patient: str, fractions=DEFAULT_FRACTIONS, seed: int = 0) -> str:
    """The split of one patient: SHA-256 of ``"{seed}:{patient}"`` read as a number in [0, 1),
    against the cumulative fractions (train below the first, val below the first two, else test).

    A function of the patient key and the seed alone, so a re-export with more (or fewer) studies
    moves no study to another split: a patient who was in test stays there, and nothing a model was
    tested on leaks into a later training set. The fractions are each patient's chances, so a small
    data set's realised shares differ from them (the command prints the counts)."""
    train, val, _ = fractions
    digest = hashlib.sha256(f"{seed}:{patient}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    return "train" if draw < train else "val" if draw < train + val else "test"


def split_by_patient(patients, fractions=DEFAULT_FRACTIONS, seed: int = 0) -> dict[str, str]:
    """{patient: split} by ``patient_split``: the same patient and seed give the same split whatever
    other patients are in the list."""
    fractions = check_fractions(fractions)
    return {patient: patient_split(patient, fractions, seed) for patient in set(patients)}


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


class Pseudonyms:
    """The names a prepared folder and its audit give patients, studies and files: the original
    ones, or with ``salt`` salted pseudonyms ("study-<16 hex>", "patient-...", "file-..."). Every
    pseudonym given out is remembered, so ``write_key_file`` can map them back (for the site only)."""

    def __init__(self, salt: str | None = None) -> None:
        if salt is not None and not salt:
            raise PrepareError("--pseudonymize needs a non-empty SALT (keep it secret: anyone who has it can test "
                               "whether a given MRN is in the data set).")
        self.salt = salt
        self.given: dict[str, tuple[str, str]] = {}  # pseudonym -> (kind, original)

    @property
    def active(self) -> bool:
        return self.salt is not None

    def __call__(self, kind: str, original: str) -> str:
        """The name of ``original``, a ``kind`` ("patient", "study" or "file")."""
        if self.salt is None:
            return original
        name = f"{kind}-{pseudonym(original, self.salt)}"
        self.given[name] = (kind, original)
        return name

    def write_key_file(self, path: Path) -> int:
        """Write kind, pseudonym, original (CSV, readable by its owner only) of every pseudonym given
        out; returns how many. The salt is not written."""
        rows = sorted((kind, name, original) for name, (kind, original) in self.given.items())
        write_csv_atomically(path, ["kind", "pseudonym", "original"], rows)
        return len(rows)


def check_key_file(path: Path | None, out: Path, pseudonymize: bool) -> None:
    """A pseudonym key file maps pseudonyms back to MRNs and accession numbers: it must never travel
    with the data set, so it may not lie inside the output folder."""
    if path is None:
        return
    if not pseudonymize:
        raise PrepareError("--pseudonym-key-file needs --pseudonymize SALT: without it the data set keeps the "
                           "original ids and there is nothing to map back.")
    path, out = Path(path).absolute().resolve(), Path(out).absolute().resolve()
    if path == out or out in path.parents:
        raise PrepareError(f"--pseudonym-key-file {path} is inside --out {out}: the key maps pseudonyms back to "
                           "patients, so keep it outside the data set folder (with your other identifiers).")
    if path.is_dir():
        raise PrepareError(f"--pseudonym-key-file {path} is a folder; give a file path, e.g. {path / 'trrg_pseudonyms.csv'}.")
