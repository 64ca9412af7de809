"""MIMIC-CXR-JPG in its raw layout -> planned studies.

    ROOT/files/pNN/pSUBJECT/sSTUDY/DICOM_ID.jpg      images (MIMIC-CXR-JPG)
    REPORTS/files/pNN/pSUBJECT/sSTUDY.txt            free-text reports (MIMIC-CXR's mimic-cxr-reports.zip)
    mimic-cxr-2.0.0-metadata.csv[.gz]                dicom_id, subject_id, study_id, ViewPosition, ...
    mimic-cxr-2.0.0-split.csv[.gz]                   dicom_id, study_id, subject_id, split (train/validate/test)
    mimic-cxr-2.0.0-chexpert.csv[.gz] (optional)     subject_id, study_id and the 14 observations

Studies are the study folders that hold images (a partial download is fine). Every image must be in
the metadata and the split file under the study and subject of its folders, else the files
disagree and ``PrepareError`` names them. The official split is used ("validate" -> "val"); it is
by patient, which ``check_patient_splits`` verifies. A study is kept when it has a frontal view
(ViewPosition PA or AP), a report, and the chosen section (``sections.extract_target``) is not
empty. Views: ``view_order`` of the image processor (the best frontal, PA before AP, then a lateral,
LATERAL before LL, then the rest), at most ``max_views``. The JPEG bytes are stored as they are.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from tqdm.auto import tqdm

from trrg.modeling.constants_trrg import CHEXPERT_OBSERVATIONS
from trrg.modeling.image_processing_trrg import FRONTAL_VIEWS, view_order
from trrg.processing.prepare.plan import PlannedImage, PlannedStudy, PrepareError, Tally, read_csv
from trrg.processing.prepare.sections import extract_target
from trrg.processing.studies.schema import StudyDataError, parse_labels

METADATA_NAME = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_NAME = "mimic-cxr-2.0.0-split.csv"
CHEXPERT_NAME = "mimic-cxr-2.0.0-chexpert.csv"
OFFICIAL_SPLITS = {"train": "train", "validate": "val", "val": "val", "test": "test"}
IMAGE_PATH = re.compile(r"^p\d{2}/p(\d+)/s(\d+)/([^/]+)\.jpg$", re.IGNORECASE)
MAX_LISTED = 5


def find_table(root: Path, name: str, given: Path | None) -> Path:
    """The given table, else ``name`` or ``name.gz`` in ROOT."""
    if given is not None:
        return Path(given)
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise PrepareError(f"{root}: no {name} or {name}.gz here. Pass its path (see trrg prepare mimic --help).")


def collect_mimic(
    root: Path,
    section: str = "findings",
    reports: Path | None = None,
    metadata: Path | None = None,
    split_file: Path | None = None,
    chexpert: Path | None = None,
    max_views: int = 2,
    tally: Tally | None = None,
) -> tuple[list[PlannedStudy], Tally]:
    """The planned studies of a MIMIC-CXR-JPG download and the tally of what was left out."""
    root, tally = Path(root), tally or Tally()
    files = root / "files"
    if not files.is_dir():
        raise PrepareError(f"{root}: no files/ folder. Pass the MIMIC-CXR-JPG folder that holds files/pNN/... .")
    metadata, split_file = find_table(root, METADATA_NAME, metadata), find_table(root, SPLIT_NAME, split_file)
    report_files = _report_base(Path(reports) if reports is not None else root)
    views = {row["dicom_id"]: (row["subject_id"], row["study_id"], (row.get("ViewPosition") or "").strip().upper(), line)
             for line, row in read_csv(metadata, ("dicom_id", "subject_id", "study_id", "ViewPosition"), "metadata CSV")}  # fmt: skip
    splits = {row["dicom_id"]: (row["subject_id"], row["study_id"], row["split"].strip(), line)
              for line, row in read_csv(split_file, ("dicom_id", "subject_id", "study_id", "split"), "split CSV")}  # fmt: skip
    labels = _read_chexpert(Path(chexpert)) if chexpert is not None else {}

    images = _images_on_disk(files, tally)
    by_study = _check_tables(images, views, splits, metadata, split_file)
    listed = {study for _, study, _, _ in splits.values()}
    missing = len(listed - {study for _, study in by_study})
    if missing:
        tally.notes.append(f"{missing} studies of {split_file.name} have no images under {files} (partial download?)")

    tally.found = len(by_study)
    planned = []
    for (subject, study), study_images in tqdm(sorted(by_study.items()), desc="reading MIMIC studies", unit="study"):
        study_id = f"s{study}"
        if not any(view in FRONTAL_VIEWS for _, _, view in study_images):
            tally.drop("no frontal image", study_id)
            continue
        report_file = report_files / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        if not report_file.is_file():
            tally.drop("no report", study_id)
            continue
        target, reason = extract_target(report_file.read_text(encoding="utf-8", errors="replace"), section)
        if target is None:
            tally.drop(reason, study_id)
            continue
        study_images = sorted(study_images)  # by dicom_id: equal views keep this order
        order = view_order([view for _, _, view in study_images])
        for index in order[max_views:]:
            tally.skip("view beyond --max-views", study_images[index][1].relative_to(root).as_posix(), study=study_id)
        split = OFFICIAL_SPLITS[splits[study_images[0][0]][2]]
        planned.append(PlannedStudy(
            id=study_id, patient=f"p{subject}", report=target, split=split, raw_labels=labels.get(study),
            images=[PlannedImage(study_images[index][1], study_images[index][1].name) for index in order[:max_views]],
        ))  # fmt: skip
    return planned, tally


def _report_base(reports: Path) -> Path:
    """REPORTS/files when it exists (the zip's layout), else REPORTS itself (its pNN folders)."""
    if not reports.is_dir():
        raise PrepareError(f"{reports}: reports folder not found. Pass --reports, the folder of mimic-cxr-reports.zip.")
    return reports / "files" if (reports / "files").is_dir() else reports


def _images_on_disk(files: Path, tally: Tally) -> list[tuple[str, str, str, Path]]:
    """(subject, study, dicom_id, path) of every files/pNN/pX/sY/*.jpg."""
    found = []
    for path in sorted(files.glob("p*/p*/s*/*")):
        match = IMAGE_PATH.match(path.relative_to(files).as_posix())
        if match is None:
            if path.is_file():
                tally.skip("file not in the MIMIC-CXR-JPG layout", path.relative_to(files.parent).as_posix())
            continue
        found.append((match.group(1), match.group(2), match.group(3), path))
    if not found:
        raise PrepareError(f"{files}: no images files/pNN/pSUBJECT/sSTUDY/*.jpg. Pass the MIMIC-CXR-JPG folder.")
    return found


def _check_tables(images, views, splits, metadata: Path, split_file: Path) -> dict:
    """{(subject, study): [(dicom_id, path, view)]}; raises when the tables disagree with the folders."""
    problems = defaultdict(list)  # file -> lines
    by_study = defaultdict(list)
    for subject, study, dicom_id, path in images:
        where = f"files/.../p{subject}/s{study}/{path.name}"
        for table, rows, name in ((split_file, splits, "split"), (metadata, views, "metadata")):
            row = rows.get(dicom_id)
            if row is None:
                problems[table].append(f"{where}: dicom_id {dicom_id} is not in the {name} file")
            elif (row[0], row[1]) != (subject, study):
                problems[table].append(f"line {row[3]}: dicom_id {dicom_id} is under subject {row[0]}, study "
                                       f"{row[1]}, but the image is in {where}")  # fmt: skip
        if dicom_id in splits and splits[dicom_id][2] not in OFFICIAL_SPLITS:
            problems[split_file].append(f"line {splits[dicom_id][3]}: split {splits[dicom_id][2]!r} is not one of "
                                        "train, validate, test")  # fmt: skip
        by_study[(subject, study)].append((dicom_id, path, views.get(dicom_id, ("", "", "", 0))[2]))
    for (subject, study), study_images in by_study.items():
        named = {splits[d][2] for d, _, _ in study_images if d in splits}
        if len(named) > 1:
            problems[split_file].append(f"study s{study} (subject p{subject}) has images in splits {sorted(named)}")
    for table, lines in problems.items():
        shown = "\n  ".join(lines[:MAX_LISTED]) + (f"\n  ... and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else "")
        raise PrepareError(f"{table} disagrees with the image folders ({len(lines)} problem(s)):\n  {shown}\n"
                           "Use the tables of the same MIMIC-CXR-JPG release as the images.")  # fmt: skip
    return by_study


def _read_chexpert(path: Path) -> dict[str, dict]:
    """{study_id: {observation: 1 | 0 | -1 | None}} of MIMIC's CheXpert label table."""
    labels = {}
    for line, row in read_csv(path, ("subject_id", "study_id", *CHEXPERT_OBSERVATIONS), "CheXpert label CSV"):
        try:
            labels[row["study_id"]] = parse_labels({name: row[name] for name in CHEXPERT_OBSERVATIONS}, row["study_id"])
        except StudyDataError as error:
            raise PrepareError(f"{path}:{line}: {error}") from None
    return labels
