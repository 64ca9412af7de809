"""A hospital folder of DICOM files plus a table of reports -> planned studies.

    FOLDER/**           DICOM files, any folder structure and names (detected by the DICM marker or .dcm)
    REPORTS.csv|.jsonl  one report per study: a key column (AccessionNumber or StudyInstanceUID, the
                        DICOM tag of the same name) and a report column

Studies are the DICOM images grouped by the key tag; the patient is ``PatientID``, the view
``ViewPosition`` (PA/AP frontal, LATERAL/LL/RL lateral) or, where a PACS leaves it empty, the view
code's meaning (``ViewCodeSequence``: "postero-anterior", "left lateral", ...) or a PA/AP/LAT word of
``SeriesDescription`` / ``ProtocolName``; a study none of whose images names its view is dropped
as "no view tag", apart from those without a frontal one. Files without pixel data that are
documents (SR, presentation states, key objects, DICOMDIR) are skipped and counted; an image file
without pixel data is an error naming it (``bad_files="skip"`` counts it instead), as is a report
row whose key matches no study. Images are decoded at write time with ``load_xray_image`` (VOI
window, MONOCHROME1) and stored as 8-bit PNG. With ``salt``, patient and study ids become salted
SHA-256 pseudonyms and image names carry no original identifier; report texts are NOT
de-identified here.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from tqdm.auto import tqdm

from trrg.processing.prepare.plan import PlannedImage, PlannedStudy, PrepareError, Tally, read_report_table
from trrg.processing.prepare.sections import extract_target
from trrg.processing.prepare.splits import DEFAULT_FRACTIONS, pseudonym, split_by_patient

REPORT_KEYS = ("AccessionNumber", "StudyInstanceUID")
FRONTAL_RANK = {"PA": 0, "AP": 1}
LATERAL_RANK = {"LATERAL": 0, "LL": 1, "RL": 2}
RADIOGRAPH_MODALITIES = {"CR", "DX", ""}  # computed / digital radiography; "" = the tag is missing
DOCUMENT_MODALITIES = {"SR", "PR", "KO", "DOC"}
DOCUMENT_SOP_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.", "1.2.840.10008.1.3.10",
                         "1.2.840.10008.5.1.4.1.1.104.")  # SR, presentation states, DICOMDIR, encapsulated PDF
DICOM_MAGIC_OFFSET = 128
MAX_LISTED = 5


def collect_dicom(
    folder: Path,
    reports: Path,
    report_key: str = "AccessionNumber",
    report_column: str = "report",
    section: str = "findings",
    fractions=DEFAULT_FRACTIONS,
    seed: int = 0,
    salt: str | None = None,
    max_views: int = 2,
    bad_files: str = "error",
    tally: Tally | None = None,
) -> tuple[list[PlannedStudy], Tally]:
    folder, reports, tally = Path(folder), Path(reports), tally or Tally()
    if report_key not in REPORT_KEYS:
        raise PrepareError(f"--report-key must be one of {REPORT_KEYS}; got {report_key!r}.")
    if not folder.is_dir():
        raise PrepareError(f"{folder}: DICOM folder not found.")
    studies = _read_headers(folder, report_key, bad_files, tally)
    texts = _read_reports(reports, report_key, report_column, set(studies), bad_files, tally)
    planned = []
    for key, images in sorted(studies.items()):
        patients = {patient for _, _, patient in images}
        if len(patients) > 1:
            raise PrepareError(f"{images[0][0]}: study {report_key}={key} has images of {len(patients)} patients "
                               "(PatientID differs between its files); fix the tags or the key column.")  # fmt: skip
        frontal = sorted((FRONTAL_RANK[view], str(path)) for path, view, _ in images if view in FRONTAL_RANK)
        if not frontal:
            unnamed = all(not view for _, view, _ in images)
            tally.drop("no view tag (ViewPosition, ViewCodeSequence, SeriesDescription)" if unnamed else "no frontal image")
            continue
        if key not in texts:
            tally.drop("no report")
            continue
        target, reason = extract_target(texts[key], section)
        if target is None:
            tally.drop(reason)
            continue
        lateral = sorted((LATERAL_RANK[view], str(path)) for path, view, _ in images if view in LATERAL_RANK)
        rest = sorted(str(path) for path, view, _ in images if view not in FRONTAL_RANK and view not in LATERAL_RANK)
        ordered = [frontal[0][1]] + [p for _, p in lateral[:1]] + [p for _, p in frontal[1:]] + [p for _, p in lateral[1:]] + rest
        tally.skip("view beyond --max-views", max(0, len(ordered) - max_views))
        patient = patients.pop()
        study_id = f"study-{pseudonym(key, salt)}" if salt is not None else key
        planned.append(PlannedStudy(
            id=study_id, patient=pseudonym(patient, salt) if salt is not None else patient, report=target, split="",
            images=[PlannedImage(Path(p), f"{study_id}_{index}.png", decode=True) for index, p in enumerate(ordered[:max_views])],
        ))  # fmt: skip
    assignment = split_by_patient([study.patient for study in planned], fractions, seed)
    for study in planned:
        study.split = assignment[study.patient]
    return planned, tally


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with path.open("rb") as file:
        file.seek(DICOM_MAGIC_OFFSET)
        return file.read(4) == b"DICM"


def _read_headers(folder: Path, report_key: str, bad_files: str, tally: Tally) -> dict[str, list]:
    """{key: [(path, view, patient)]} of the radiographs under ``folder``."""
    import pydicom

    studies, seen_instances = defaultdict(list), set()
    files = sorted(path for path in folder.rglob("*") if path.is_file() and not path.name.startswith("."))
    for path in tqdm(files, desc="reading DICOM headers", unit="file"):
        if not _is_dicom_file(path):
            tally.skip("not a DICOM file")
            continue
        try:
            dataset = pydicom.dcmread(path, defer_size="64 KB")  # pixel data stays on disk until write time
        except Exception as error:  # pydicom raises many types for broken files
            _bad(path, f"not a readable DICOM file ({error})", bad_files, tally, "unreadable DICOM")
            continue
        sop_class = str(dataset.get("SOPClassUID", "") or getattr(dataset.get("file_meta"), "MediaStorageSOPClassUID", ""))
        modality = str(dataset.get("Modality", "") or "").upper()
        if modality in DOCUMENT_MODALITIES or sop_class.startswith(DOCUMENT_SOP_PREFIXES):
            tally.skip("DICOM document, not an image (SR, PR, KO, DICOMDIR)")
            continue
        if not any(tag in dataset for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            _bad(path, f"DICOM has no pixel data (modality {modality or 'unknown'}, SOP class {sop_class or 'unknown'})",
                 bad_files, tally, "DICOM without pixel data")  # fmt: skip
            continue
        if modality not in RADIOGRAPH_MODALITIES:
            tally.skip(f"modality {modality}, not CR/DX")
            continue
        instance = str(dataset.get("SOPInstanceUID", "") or "") or str(path)
        if instance in seen_instances:
            tally.skip("duplicate image (same SOPInstanceUID)")
            continue
        seen_instances.add(instance)
        key = str(dataset.get(report_key, "") or "").strip()
        if not key:
            tally.skip(f"image without {report_key}")
            continue
        patient = str(dataset.get("PatientID", "") or "").strip()
        if not patient:
            raise PrepareError(f"{path}: DICOM has no PatientID; splits are by patient, so every image needs one.")
        studies[key].append((path, view_of(dataset), patient))
    if not studies:
        raise PrepareError(f"{folder}: no radiograph DICOM files (CR/DX with pixel data and {report_key}) found.")
    return studies


# ViewCodeSequence meanings (DICOM CID 4010) and description words -> the ViewPosition they mean
VIEW_CODE_MEANINGS = {"postero-anterior": "PA", "antero-posterior": "AP", "left lateral": "LL", "right lateral": "RL",
                      "lateral": "LATERAL", "latero-medial": "LATERAL", "medio-lateral": "LATERAL"}
DESCRIPTION_WORDS = {"PA": "PA", "AP": "AP", "LAT": "LATERAL", "LATERAL": "LATERAL", "LL": "LL", "RL": "RL"}


def view_of(dataset) -> str:
    """PA, AP, LATERAL, LL, RL, another ViewPosition value, or "" when no tag names the view."""
    view = str(dataset.get("ViewPosition", "") or "").strip().upper()
    if view:
        return view
    for item in dataset.get("ViewCodeSequence", None) or []:
        meaning = str(item.get("CodeMeaning", "") or "").strip().lower()
        if meaning in VIEW_CODE_MEANINGS:
            return VIEW_CODE_MEANINGS[meaning]
    for tag in ("SeriesDescription", "ProtocolName"):
        words = re.findall(r"[A-Z]+", str(dataset.get(tag, "") or "").upper())
        named = {DESCRIPTION_WORDS[word] for word in words if word in DESCRIPTION_WORDS}
        if len(named) == 1:  # "CHEST PA" names one view; "PA AND LAT" (a combined series) names none
            return named.pop()
    return ""


def _bad(path: Path, problem: str, bad_files: str, tally: Tally, reason: str) -> None:
    if bad_files == "skip":
        tally.skip(reason)
        return
    raise PrepareError(f"{path}: {problem}. Remove the file, or pass --bad-files skip to count such files and go on.")


def _read_reports(reports: Path, report_key: str, report_column: str, keys: set[str], bad_files: str,
                  tally: Tally) -> dict[str, str]:
    texts, orphans = {}, []
    for where, key, text in read_report_table(reports, report_key, report_column):
        if key not in keys:
            orphans.append(f"{where}: {report_key} {key!r}")
            continue
        if key in texts:
            tally.drop("duplicate")
            continue
        texts[key] = text
    if orphans and bad_files == "skip":
        tally.skip("report without a study", len(orphans))
    elif orphans:
        shown = "\n  ".join(orphans[:MAX_LISTED]) + (f"\n  ... and {len(orphans) - MAX_LISTED} more" if len(orphans) > MAX_LISTED else "")
        raise PrepareError(f"{reports}: {len(orphans)} report(s) without a study: no DICOM image has their "
                           f"{report_key}:\n  {shown}\nCheck --report-key and the DICOM folder, or pass --bad-files skip.")
    return texts
