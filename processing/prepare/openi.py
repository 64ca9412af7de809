"""Open-i / IU-Xray in its raw form -> planned studies.

    REPORTS/*.xml       ecgen-radiology: one report per file; <AbstractText Label="FINDINGS">,
                        <AbstractText Label="IMPRESSION">, <parentImage id="CXR1_1_IM-0001-3001"> per view
    IMAGES/*.png        NLMCXR_png: IMAGES/<parentImage id>.png

Each report is one patient (IU-Xray has one study per patient), so the split by patient
(``patient_split``: the study id and the seed) is a split by report. A report repeating an earlier
one's study id or images is a duplicate (the first is kept), not another study. The XML names no
view, so views are kept in the order the report lists them (the frontal first in IU-Xray), at most
``max_views``; there is no frontal check. The PNG bytes are stored as they are. IU-Xray's
de-identification marks ("XXXX") are kept, as R2Gen's IU-Xray annotation keeps them.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from tqdm.auto import tqdm

from trrg.processing.prepare.plan import PlannedImage, PlannedStudy, PrepareError, Tally
from trrg.processing.prepare.sections import is_empty_report, tidy_report
from trrg.processing.prepare.splits import DEFAULT_FRACTIONS, split_by_patient

NO_SECTION = {"findings": "no findings section", "impression": "no impression section",
              "both": "no findings or impression section", "full": "no findings or impression section"}  # fmt: skip


def _number(path: Path):
    """Sort key: report 2 before report 10."""
    digits = re.findall(r"\d+", path.stem)
    return (int(digits[0]) if digits else float("inf"), path.name)


def collect_openi(
    reports: Path,
    images: Path,
    section: str = "findings",
    fractions=DEFAULT_FRACTIONS,
    seed: int = 0,
    max_views: int = 2,
    bad_files: str = "error",
    tally: Tally | None = None,
) -> tuple[list[PlannedStudy], Tally]:
    reports, images, tally = Path(reports), Path(images), tally or Tally()
    for folder, what in ((reports, "report XML folder (ecgen-radiology)"), (images, "PNG folder (NLMCXR_png)")):
        if not folder.is_dir():
            raise PrepareError(f"{folder}: {what} not found.")
    files = sorted(reports.glob("*.xml"), key=_number)
    if not files:
        raise PrepareError(f"{reports}: no .xml reports here. Pass the ecgen-radiology folder.")
    planned, seen_ids, claimed = [], set(), set()
    for path in tqdm(files, desc="reading Open-i reports", unit="report"):
        try:
            root = ElementTree.parse(path).getroot()
        except (ElementTree.ParseError, OSError) as error:
            if bad_files == "skip":
                tally.skip("unreadable XML", path.name, detail=str(error))
                continue
            raise PrepareError(f"{path}: not readable XML ({error}). Re-extract the Open-i archive, or pass "
                               "--bad-files skip to count such files and go on.") from None
        uid = root.find(".//uId")
        study_id = uid.get("id") if uid is not None and uid.get("id") else f"CXR{path.stem}"
        image_ids = [element.get("id") for element in root.iter("parentImage") if element.get("id")]
        if study_id in seen_ids or (image_ids and any(i in claimed for i in image_ids)):
            # the same study again (its id or its images): a duplicate report, not another study
            tally.duplicate("repeats an earlier report's study id or images (the first is kept)", study_id,
                            where=path.name)  # fmt: skip
            continue
        seen_ids.add(study_id)
        texts = {(element.get("Label") or "").upper(): element.text or "" for element in root.iter("AbstractText")}
        target = _target(texts, section)
        if target is None:
            tally.drop(NO_SECTION[section], study_id)
            continue
        if is_empty_report(target):
            tally.drop("empty after cleaning", study_id)
            continue
        present = [i for i in dict.fromkeys(image_ids) if (images / f"{i}.png").is_file()]
        for missing in sorted(set(image_ids) - set(present)):
            tally.skip("image file missing", f"{missing}.png", study=study_id)
        if not present:
            tally.drop("no image file", study_id)
            continue
        claimed.update(image_ids)
        for extra in present[max_views:]:
            tally.skip("view beyond --max-views", f"{extra}.png", study=study_id)
        planned.append(PlannedStudy(id=study_id, patient=study_id, report=target, split="",
                                    images=[PlannedImage(images / f"{i}.png", f"{i}.png") for i in present[:max_views]]))
    tally.found = len(seen_ids)
    assignment = split_by_patient([study.patient for study in planned], fractions, seed)
    for study in planned:
        study.split = assignment[study.patient]
    return planned, tally


def _target(texts: dict[str, str], section: str) -> str | None:
    findings, impression = tidy_report(texts.get("FINDINGS", "")), tidy_report(texts.get("IMPRESSION", ""))
    if section == "findings":
        return findings or None
    if section == "impression":
        return impression or None
    return " ".join(part for part in (findings, impression) if part) or None
