"""Raw data sets -> a prepared study folder (``trrg prepare``), read by ``load_studies(DIR)``.

Each source module turns its raw layout into planned studies and a tally of what it left out and
why: ``mimic.collect_mimic`` (MIMIC-CXR-JPG + MIMIC-CXR reports, official split),
``openi.collect_openi`` (Open-i / IU-Xray XML + PNG), ``dicom_folder.collect_dicom`` (a hospital
DICOM folder + a report table). ``sections`` extracts FINDINGS/IMPRESSION, ``splits`` splits by
patient (stable: a patient's split is a function of its id and the seed) and checks it, and names
ids with pseudonyms (``Pseudonyms``); ``writer.write_prepared`` writes the ``DatasetDict`` with
``save_to_disk``, ``prepare.json`` and the audit ``prepare_audit.jsonl``.
"""

from trrg.processing.prepare.dicom_folder import collect_dicom
from trrg.processing.prepare.mimic import collect_mimic
from trrg.processing.prepare.openi import collect_openi
from trrg.processing.prepare.plan import PlannedImage, PlannedStudy, PrepareError, Tally
from trrg.processing.prepare.sections import extract_target, split_sections, tidy_report
from trrg.processing.prepare.splits import Pseudonyms, check_patient_splits, patient_split, split_by_patient
from trrg.processing.prepare.writer import PrepareResult, summary_lines, write_prepared

__all__ = [
    "PlannedImage",
    "PlannedStudy",
    "PrepareError",
    "PrepareResult",
    "Pseudonyms",
    "Tally",
    "check_patient_splits",
    "collect_dicom",
    "collect_mimic",
    "collect_openi",
    "extract_target",
    "patient_split",
    "split_by_patient",
    "split_sections",
    "summary_lines",
    "tidy_report",
    "write_prepared",
]
