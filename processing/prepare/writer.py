"""Planned studies -> a ``datasets.DatasetDict`` on disk (``save_to_disk``), read back by
``load_studies(DIR)`` (format "saved", ``processing/studies/saved.py``).

Rows follow the study schema with in-memory images (``study_features(in_memory_images=True)``):
every view is a ``datasets.Image`` value whose bytes live in the Arrow files, each image once.
Rows are streamed through ``Dataset.from_generator`` into a temporary cache beside the output, so
memory stays flat however large the data set is; the finished folder replaces ``out`` at the end,
so an interrupted run never leaves half a data set where ``--data`` would find it. In the folder:

* ``prepare.json``: the source, the options, the counts (studies found = kept + dropped; skipped
  files; resolved duplicates) and the data set's name ("dicom data set 3f2a9c1e": the source kind
  and ``content_fingerprint`` of what was written; every split's ``info.dataset_name`` carries it, so
  ``load_studies`` gives the folder that name);
* ``prepare_audit.jsonl``: one line per dropped study, skipped file/view/report row and resolved
  duplicate report row, with its reason and its id (pseudonymised when the source was).
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from datasets.exceptions import DatasetGenerationError
from PIL import Image as PILImage
from tqdm.auto import tqdm

from trrg.modeling.image_processing_trrg import XRayImageError, load_xray_image
from trrg.processing.prepare.plan import PlannedImage, PlannedStudy, PrepareError, Tally
from trrg.processing.prepare.splits import SPLIT_NAMES, check_patient_splits
from trrg.processing.studies.provenance import data_set_name
from trrg.processing.studies.schema import StudyDataError, row_labels, study_features

SUMMARY_FILE = "prepare.json"
AUDIT_FILE = "prepare_audit.jsonl"
FIRST_VIEW_UNREADABLE = "first (frontal) view unreadable"


@dataclass
class PrepareResult:
    out: Path
    kept: dict[str, int]  # split -> studies
    images: int
    patients: dict[str, int]  # split -> patients
    tally: Tally = field(default_factory=Tally)
    name: str = ""  # the data set's name (info.dataset_name of every split)


def check_output_folder(out: Path, overwrite: bool) -> None:
    """``out`` must be new, empty, or (with ``overwrite``) an earlier prepared folder."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (overwrite and (out / "dataset_dict.json").is_file()):
            raise PrepareError(f"{out} exists and is not empty; choose a new --out folder (or --overwrite an "
                               "earlier trrg prepare output). Nothing was written.")


def image_bytes(image: PlannedImage, max_side: int | None) -> tuple[str, bytes]:
    """(name, bytes) of one view: the file's bytes, or a PNG of the decoded (and downscaled) image."""
    if not image.decode and max_side is None:
        data = image.file.read_bytes()
        if not data:
            raise XRayImageError(f"{image.file}: file is empty (0 bytes). Re-download the image.")
        return image.name, data
    gray = load_xray_image(image.file)
    if max_side is not None and max(gray.size) > max_side:
        scale = max_side / max(gray.size)
        gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))), PILImage.LANCZOS)
    buffer = io.BytesIO()
    gray.save(buffer, format="PNG")
    return str(Path(image.name).with_suffix(".png").as_posix()), buffer.getvalue()


def _rows(studies: list[PlannedStudy], split: str, max_side: int | None, bad_files: str, tally: Tally, counts: Counter):
    for study in tqdm(studies, desc=f"writing {split}", unit="study"):
        views = []
        for index, image in enumerate(study.images):
            try:
                name, data = image_bytes(image, max_side)
            except (XRayImageError, OSError) as error:
                if bad_files != "skip":
                    raise PrepareError(f"{image.file}: cannot be stored ({error}). Pass --bad-files skip to count "
                                       "such images and go on.") from None  # fmt: skip
                tally.skip("unreadable image", image.audit_name or str(image.file), study=study.id, detail=str(error))
                if index == 0:  # the model reads the first view as the frontal one: no study without it
                    break
                continue
            views.append({"path": name, "bytes": data})
        if not views:
            tally.drop(FIRST_VIEW_UNREADABLE, study.id)
            continue
        try:
            labels = row_labels(study.raw_labels, study.report, study.id, "annotation")
        except StudyDataError as error:
            raise PrepareError(f"study {study.id}: {error}") from None
        counts["studies", split] += 1
        counts["images", split] += len(views)
        yield {"id": study.id, "images": views, "report": study.report, "labels": labels, "split": split}


def split_order(names) -> list[str]:
    return [name for name in SPLIT_NAMES if name in names] + sorted(set(names) - set(SPLIT_NAMES))


def write_prepared(
    studies: list[PlannedStudy],
    out: Path,
    tally: Tally,
    source: str,
    options: dict | None = None,
    max_side: int | None = None,
    bad_files: str = "error",
    overwrite: bool = False,
    kind: str = "prepared",
) -> PrepareResult:
    """Write ``studies`` to ``out`` as a ``DatasetDict`` (one split per name), ``prepare.json`` and
    ``prepare_audit.jsonl``; the data set is named after ``kind`` ("dicom", "mimic", "openi") and
    its content."""
    out = Path(out)
    check_output_folder(out, overwrite)
    if not studies:
        raise PrepareError(f"{source}: no study was kept ({_reasons(tally)}); nothing to write.")
    check_patient_splits(studies, source)
    duplicates = [study_id for study_id, n in Counter(s.id for s in studies).items() if n > 1]
    if duplicates:
        raise PrepareError(f"{source}: study ids {duplicates[:5]} occur more than once; ids must be unique.")
    by_split: dict[str, list[PlannedStudy]] = {}
    for study in studies:
        by_split.setdefault(study.split, []).append(study)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.prepare-{uuid.uuid4().hex[:8]}"
    counts: Counter = Counter()
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # ours show studies; datasets' would show Arrow batches
    try:
        parts = {}
        for split in split_order(by_split):
            try:
                # A partial, not gen_kwargs: datasets would shard list arguments into one call per study.
                rows = functools.partial(_rows, by_split[split], split, max_side, bad_files, tally, counts)
                part = datasets.Dataset.from_generator(rows, features=study_features(in_memory_images=True),
                                                       cache_dir=str(work / "cache"), fingerprint=uuid.uuid4().hex,
                                                       split=split)  # fmt: skip
            except DatasetGenerationError as error:
                raise (error.__cause__ or error) from None  # our PrepareError, not datasets' wrapper
            if len(part):
                parts[split] = part
        if not parts:
            raise PrepareError(f"{source}: no study had a readable image ({_reasons(tally)}); nothing to write.")
        name = data_set_name(kind, datasets.DatasetDict(parts))
        for part in parts.values():
            part.info.dataset_name = name  # saved in each split's dataset_info.json; load_studies keeps it
        datasets.DatasetDict(parts).save_to_disk(str(work / "data"))
        kept = {split: len(part) for split, part in parts.items()}
        patients = {split: len({s.patient for s in by_split[split]}) for split in parts}
        _check_reconciled(tally, sum(kept.values()))
        summary = {"name": name, "source": source, "options": options or {}, "found": tally.found, "kept": kept,
                   "patients": patients, "images": sum(counts["images", split] for split in parts),
                   "dropped": dict(tally.dropped), "skipped": dict(tally.skipped),
                   "duplicates": dict(tally.duplicates), "audit": AUDIT_FILE, "notes": tally.notes}  # fmt: skip
        (work / "data" / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (work / "data" / AUDIT_FILE).write_text("".join(json.dumps(record) + "\n" for record in tally.audit), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out) if any(out.iterdir()) else out.rmdir()
        os.replace(work / "data", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if bars:
            datasets.enable_progress_bars()
    return PrepareResult(out, kept, summary["images"], patients, tally, name)


def _check_reconciled(tally: Tally, kept: int) -> None:
    """Every study found is kept or dropped; say so loudly if a count went astray."""
    dropped = sum(tally.dropped.values())
    if tally.found is not None and tally.found != kept + dropped:
        tally.notes.append(f"COUNTS DO NOT RECONCILE: {tally.found} studies found, {kept} kept + {dropped} dropped "
                           "(a trrg bug: please report it with prepare.json)")  # fmt: skip


def _reasons(tally: Tally) -> str:
    dropped = ", ".join(f"{reason}: {n}" for reason, n in tally.dropped.most_common()) or "none dropped"
    return f"dropped {dropped}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def summary_lines(result: PrepareResult, source: str) -> list[str]:
    """What ``trrg prepare`` prints: kept per split, studies found = kept + dropped, dropped studies,
    skipped files and resolved duplicate report rows per reason, where the audit is."""
    total, tally = sum(result.kept.values()), result.tally
    splits = ", ".join(f"{split} {n} ({_count(result.patients[split], 'patient')})" for split, n in result.kept.items())
    lines = [f"{source}: kept {total} studies, {result.images} images: {splits}"]
    if tally.found is not None:
        lines.append(f"studies found {tally.found} = kept {total} + dropped {sum(tally.dropped.values())}")
    width = max((len(reason) for reason in [*tally.dropped, *tally.skipped, *tally.duplicates]), default=0)
    sections = [(tally.dropped, f"dropped {sum(tally.dropped.values())} studies"),
                (tally.skipped, f"skipped {sum(tally.skipped.values())} files/views/report rows"),
                (tally.duplicates, f"resolved {sum(tally.duplicates.values())} duplicate report rows "
                                   "(a key repeated; not dropped studies)")]  # fmt: skip
    for counts, heading in sections:
        if counts or counts is tally.dropped:
            lines.append(heading + (":" if counts else ""))
            lines += [f"  {reason.ljust(width)}  {n}" for reason, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    lines += [f"note: {note}" for note in tally.notes]
    lines.append(f"audit: {result.out / AUDIT_FILE} (one line per dropped study, skipped item and duplicate row)")
    lines.append(f"wrote {result.out} as {result.name!r} (train or evaluate on it with --data {result.out})")
    return lines
