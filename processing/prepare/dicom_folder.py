"""A hospital folder of DICOM files plus a table of reports -> planned studies.

    FOLDER/**           DICOM files, any folder structure and names (detected by the DICM marker or
                        .dcm), e.g. a PACS export MRN/DATE_ACCESSION/SERnnn/IMnnnnn
    REPORTS.csv|.jsonl  the RIS export: a key column (the AccessionNumber or StudyInstanceUID of the
                        study), a report column, optionally a report date column

Studies are the DICOM images grouped by the key tag; the patient is ``PatientID``, the view the one
``dicom_view`` reads from the tags (``ViewPosition``, else ``ViewCodeSequence``, else one PA/AP/LAT
word of ``SeriesDescription``/``ProtocolName``), and the views are stored in ``view_order`` (frontal
first): both live in the image processor, so inference orders a study's DICOM files as this does.
A study none of whose images names its view is dropped as "no view tag", one without a frontal view
as "no frontal image". Documents (SR, presentation states, key objects, DICOMDIR) are skipped and
counted. Images are decoded at write time with ``load_xray_image`` (VOI window, MONOCHROME1) and
stored as 8-bit PNG. Reports lose their sign-off lines (``strip_signatures``) before sectioning.

Bad input stops with the file named (``bad_files="skip"`` counts it in the audit instead): an
unreadable DICOM, an image without pixel data or PatientID, a study whose images name two patients,
a report row whose key matches no study. Report rows that repeat a key are resolved by one rule
(``resolve_duplicates``), counted as duplicates, never as dropped studies.

The split is ``patient_split`` of the original PatientID and the seed: stable when studies are added
or removed, and the same whatever the salt. With a salt, patient, study and file names become salted
SHA-256 pseudonyms (``Pseudonyms``) in the data set and its audit; report texts are NOT
de-identified here.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from trrg.modeling.image_processing_trrg import FRONTAL_VIEWS, LATERAL_VIEWS, VIEW_TAGS, dicom_view, view_order
from trrg.processing.prepare.plan import PlannedImage, PlannedStudy, PrepareError, ReportRow, Tally, read_report_table
from trrg.processing.prepare.sections import extract_target, split_sections, strip_signatures
from trrg.processing.prepare.splits import DEFAULT_FRACTIONS, Pseudonyms, check_fractions, patient_split

REPORT_KEYS = ("AccessionNumber", "StudyInstanceUID")
RADIOGRAPH_MODALITIES = {"CR", "DX", ""}  # computed / digital radiography; "" = the tag is missing
DOCUMENT_MODALITIES = {"SR", "PR", "KO", "DOC"}
DOCUMENT_SOP_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.", "1.2.840.10008.1.3.10",
                         "1.2.840.10008.5.1.4.1.1.104.")  # SR, presentation states, DICOMDIR, encapsulated PDF
DICOM_MAGIC_OFFSET = 128
MAX_LISTED = 5
ADDENDUM_START = re.compile(r"^\s*addendum\b", re.IGNORECASE)
DUPLICATE_RULE = ("rows sharing a key are taken in report-date order (--date-column), else file order; the "
                  "latest row is the report, except that a row holding only an addendum (no FINDINGS or "
                  "IMPRESSION of its own) is appended to the report before it, and a row identical to it "
                  "is ignored")  # fmt: skip
SUPERSEDED, APPENDED = "superseded by a later report row", "addendum appended to the earlier report"
IDENTICAL = "identical to an earlier report row"


@dataclass(frozen=True)
class ImageHeader:
    path: Path
    view: str
    patient: str


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
    key_column: str | None = None,
    date_column: str | None = None,
    pseudonyms: Pseudonyms | None = None,
) -> tuple[list[PlannedStudy], Tally]:
    """The planned studies of a DICOM folder and the tally (and audit) of what was left out.

    ``key_column``: the reports' column holding the ``report_key`` value (default: named like the
    tag). ``pseudonyms``: the ``Pseudonyms`` to name ids with (and remember, for a key file); by
    default ``Pseudonyms(salt)``.
    """
    folder, reports, tally = Path(folder), Path(reports), tally or Tally()
    names = pseudonyms or Pseudonyms(salt)
    tally.private = tally.private or names.active
    fractions = check_fractions(fractions)
    if report_key not in REPORT_KEYS:
        raise PrepareError(f"--report-key must be one of {REPORT_KEYS}; got {report_key!r}.")
    if not folder.is_dir():
        raise PrepareError(f"{folder}: DICOM folder not found.")
    key_column = key_column or report_key
    hint = (f"Name yours with --key-column (the {report_key} of each study; now {key_column!r}) and "
            f"--report-column (the report text; now {report_column!r})"
            + (f" and --date-column (now {date_column!r})." if date_column else "."))  # fmt: skip
    rows = list(read_report_table(reports, key_column, report_column, date_column, hint))  # its errors before minutes of headers
    for row in rows if date_column else []:
        if row.date:
            _report_date(row, date_column)  # a date this cannot read stops here, not after the headers
    studies = _read_headers(folder, report_key, bad_files, tally, names)
    tally.found = len(studies)
    texts = _match_reports(rows, reports, report_key, key_column, date_column, set(studies), bad_files, tally, names)
    if tally.duplicates:
        tally.notes.append(f"report rows repeating a key: {DUPLICATE_RULE}")
    planned = []
    for key, images in sorted(studies.items()):
        study_id = names("study", key)
        patients = sorted({image.patient for image in images})
        if len(patients) > 1:
            problem = f"images of {len(patients)} patients under one {report_key}"
            if bad_files != "skip":
                raise PrepareError(f"{images[0].path}: study {report_key}={key} has {problem} (PatientID differs "
                                   "between its files); fix the tags or the key column, or pass --bad-files skip "
                                   "to drop such studies and go on.")  # fmt: skip
            tally.drop(problem, study_id, patients=[names("patient", patient) for patient in patients])
            continue
        order = view_order([image.view for image in images])  # images are in path order: ties stay so
        if not any(image.view in FRONTAL_VIEWS for image in images):
            unnamed = all(not image.view for image in images)
            tally.drop(f"no view tag ({VIEW_TAGS})" if unnamed else "no frontal image", study_id)
            continue
        if key not in texts:
            tally.drop("no report", study_id)
            continue
        target, reason = extract_target(strip_signatures(texts[key]), section)  # a sign-off names the radiologist
        if target is None:
            tally.drop(reason, study_id)
            continue
        for index in order[max_views:]:
            tally.skip("view beyond --max-views", _file_name(images[index].path, folder, names), study=study_id)
        kept = [images[index].path for index in order[:max_views]]
        planned.append(PlannedStudy(
            id=study_id, patient=names("patient", patients[0]), report=target,
            split=patient_split(patients[0], fractions, seed),  # the original id: the same split whatever the salt
            images=[PlannedImage(path, f"{study_id}_{index}.png", decode=True, audit_name=_file_name(path, folder, names))
                    for index, path in enumerate(kept)],
        ))  # fmt: skip
    return planned, tally


def _file_name(path: Path, folder: Path, names: Pseudonyms) -> str:
    """A file as the audit names it: its path under the folder, or its pseudonym."""
    return names("file", path.relative_to(folder).as_posix())


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with path.open("rb") as file:
        file.seek(DICOM_MAGIC_OFFSET)
        return file.read(4) == b"DICM"


def _read_headers(folder: Path, report_key: str, bad_files: str, tally: Tally,
                  names: Pseudonyms) -> dict[str, list[ImageHeader]]:
    """{key: [ImageHeader]} of the radiographs under ``folder``, each study's images in path order."""
    import pydicom

    studies, seen_instances = defaultdict(list), set()
    files = sorted(path for path in folder.rglob("*") if path.is_file() and not path.name.startswith("."))
    for path in tqdm(files, desc="reading DICOM headers", unit="file"):
        name = _file_name(path, folder, names)
        try:
            is_dicom = _is_dicom_file(path)
        except OSError as error:
            _bad(path, f"cannot be read ({error})", bad_files, tally, "unreadable file", name)
            continue
        if not is_dicom:
            tally.skip("not a DICOM file", name)
            continue
        try:
            dataset = pydicom.dcmread(path, defer_size="64 KB")  # pixel data stays on disk until write time
        except Exception as error:  # pydicom raises many types for broken files
            _bad(path, f"not a readable DICOM file ({error})", bad_files, tally, "unreadable DICOM", name)
            continue
        key = str(dataset.get(report_key, "") or "").strip()
        study = names("study", key) if key else None
        sop_class = str(dataset.get("SOPClassUID", "") or getattr(dataset.get("file_meta"), "MediaStorageSOPClassUID", ""))
        modality = str(dataset.get("Modality", "") or "").upper()
        if modality in DOCUMENT_MODALITIES or sop_class.startswith(DOCUMENT_SOP_PREFIXES):
            tally.skip("DICOM document, not an image (SR, PR, KO, DICOMDIR)", name, study=study)
            continue
        if not any(tag in dataset for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            _bad(path, f"DICOM has no pixel data (modality {modality or 'unknown'}, SOP class {sop_class or 'unknown'})",
                 bad_files, tally, "DICOM without pixel data", name, study)  # fmt: skip
            continue
        if modality not in RADIOGRAPH_MODALITIES:
            tally.skip(f"modality {modality}, not CR/DX", name, study=study)
            continue
        instance = str(dataset.get("SOPInstanceUID", "") or "") or str(path)
        if instance in seen_instances:
            tally.skip("duplicate image (same SOPInstanceUID)", name, study=study)
            continue
        seen_instances.add(instance)
        if not key:
            tally.skip(f"image without {report_key}", name)
            continue
        patient = str(dataset.get("PatientID", "") or "").strip()
        if not patient:
            _bad(path, "DICOM has no PatientID; splits are by patient, so every image needs one", bad_files, tally,
                 "image without PatientID", name, study)  # fmt: skip
            continue
        studies[key].append(ImageHeader(path, dicom_view(dataset), patient))
    if not studies:
        raise PrepareError(f"{folder}: no radiograph DICOM files (CR/DX with pixel data and {report_key}) found.")
    return studies


def _bad(path: Path, problem: str, bad_files: str, tally: Tally, reason: str, name: str, study: str | None = None) -> None:
    if bad_files == "skip":
        tally.skip(reason, name, study=study, detail=problem)
        return
    raise PrepareError(f"{path}: {problem}. Remove the file, or pass --bad-files skip to count such files and go on.")


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


def _match_reports(rows: list[ReportRow], reports: Path, report_key: str, key_column: str, date_column: str | None,
                   keys: set[str], bad_files: str, tally: Tally, names: Pseudonyms) -> dict[str, str]:
    """{key: report text} of the studies found; duplicates resolved, orphans counted or fatal."""
    rows_of, orphans = defaultdict(list), []
    for row in rows:
        if row.key in keys:
            rows_of[row.key].append(row)
        else:
            orphans.append(row)
    if orphans and bad_files != "skip":
        shown = "\n  ".join(f"{row.where}: {key_column} {row.key!r}" for row in orphans[:MAX_LISTED])
        more = f"\n  ... and {len(orphans) - MAX_LISTED} more" if len(orphans) > MAX_LISTED else ""
        raise PrepareError(f"{reports}: {len(orphans)} report(s) without a study: no DICOM image has their "
                           f"{report_key}:\n  {shown}{more}\nCheck --report-key, --key-column and the DICOM folder, "
                           "or pass --bad-files skip.")  # fmt: skip
    for row in orphans:
        reason = f"report row without {key_column}" if not row.key else "report without a study"
        tally.skip(reason, where=row.where, study=names("study", row.key) if row.key else None)
    return {key: resolve_duplicates(key_rows, date_column, tally, names("study", key)) for key, key_rows in rows_of.items()}


def resolve_duplicates(rows: list[ReportRow], date_column: str | None, tally: Tally, study: str) -> str:
    """One report text from the rows that share a study's key (``DUPLICATE_RULE``); each row that
    is not the report as it stands is counted and audited as a duplicate, naming the row kept."""
    if len(rows) == 1:
        return rows[0].text
    if date_column:
        rows = sorted(rows, key=lambda row: _report_date(row, date_column))  # stable: equal dates keep file order
    text, base = rows[0].text, rows[0]
    for row in rows[1:]:
        if row.text.strip() == base.text.strip():
            tally.duplicate(IDENTICAL, study, where=row.where, same_as=base.where)
        elif is_addendum(row.text):
            text = f"{text.rstrip()}\n\n{row.text.strip()}\n"
            tally.duplicate(APPENDED, study, where=row.where, appended_to=base.where)
        else:
            tally.duplicate(SUPERSEDED, study, where=base.where, superseded_by=row.where)
            text, base = row.text, row
    return text


def is_addendum(text: str) -> bool:
    """A report row that holds only an addendum: it starts with ADDENDUM, or has an ADDENDUM
    section, and has no FINDINGS or IMPRESSION of its own (a full amended report has them)."""
    names = {section.name for section in split_sections(text)}
    if names & {"findings", "impression"}:
        return False
    return "addendum" in names or bool(ADDENDUM_START.match(text))


def _report_date(row: ReportRow, date_column: str) -> datetime:
    """The row's date: ISO 8601 ("2024-03-05 14:02", "2024-03-05T14:02:00") or DICOM ("20240305",
    "20240305140200"); naive times are taken as they are, aware ones in UTC."""
    value = row.date
    if value.isdigit() and len(value) in (12, 14):
        value = f"{value[:8]}T{value[8:]}"
    try:
        date = datetime.fromisoformat(value)
    except ValueError:
        raise PrepareError(f"{row.where}: {date_column} {row.date!r} is not a date this reads (ISO 8601 like "
                           "2024-03-05 14:02, or DICOM 20240305[140200]); duplicate report rows are ordered by it. "
                           "In Excel, format the column as yyyy-mm-dd hh:mm before exporting.") from None
    return date.astimezone(timezone.utc).replace(tzinfo=None) if date.tzinfo else date
