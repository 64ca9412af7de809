"""``trrg prepare`` end to end on tiny raw trees made here (MIMIC-CXR-JPG, Open-i, a DICOM folder):
the printed kept/dropped counts, ``load_studies(DIR)`` on the result, one training step on it, the
section parser on MIMIC's awkward reports, and a clear error naming the file for each bad input."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import xray_like
from trrg.cli import main
from trrg.processing.prepare import PrepareError, extract_target, split_by_patient, split_sections
from trrg.processing.prepare.splits import pseudonym
from trrg.processing.studies import format_of, load_studies

# ---------------------------------------------------------------------------------------------
# Fixtures: raw trees in the real formats
# ---------------------------------------------------------------------------------------------

HEADER = "                                 FINAL REPORT\n"
STANDARD = HEADER + """ EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___F with new onset ascites  // eval for infection
 
 TECHNIQUE:  Chest PA and lateral
 
 COMPARISON:  ___
 
 FINDINGS: 
 
 There is no focal consolidation, pleural effusion or pneumothorax.  The
 cardiomediastinal silhouette is normal.  Compared to ___, the heart size is
 unchanged.
 
 IMPRESSION: 
 
 No acute cardiopulmonary process.
"""
NO_FINDINGS_HEADER = HEADER + """ PA AND LATERAL CHEST ___
 
 HISTORY:  ___-year-old man with cough.
 
 Heart size is normal.  Small left pleural effusion.  No pneumothorax.
"""
MERGED = HEADER + """ INDICATION:  Shortness of breath.
 
 FINDINGS AND IMPRESSION:  Moderate cardiomegaly.  Mild pulmonary edema.  No
 focal consolidation.
"""
IMPRESSION_ONLY = HEADER + """ INDICATION:  Line placement.
 
 IMPRESSION:  Right internal jugular line ends in the low SVC.
"""
ONLY_DEID = HEADER + """ FINDINGS:  ___.
 
 IMPRESSION:  ___
"""

MIMIC_STUDIES = [  # subject, study, split, [(dicom_id, view)], report (None: no report file)
    ("10000001", "50000001", "train", [("d01", "PA"), ("d02", "LATERAL")], STANDARD),
    ("10000001", "50000002", "train", [("d03", "AP")], NO_FINDINGS_HEADER),
    ("10000002", "50000003", "validate", [("d04", "PA"), ("d05", "LL")], MERGED),
    ("10000003", "50000004", "test", [("d06", "PA")], IMPRESSION_ONLY),
    ("10000004", "50000005", "train", [("d07", "LATERAL")], STANDARD),  # lateral only
    ("10000005", "50000006", "test", [("d08", "PA")], ONLY_DEID),
    ("10000006", "50000007", "test", [("d09", "PA")], None),
    ("10000007", "50000008", "train", [("d10", "AP"), ("d11", "PA"), ("d12", "LATERAL")], STANDARD),
    ("10000008", "50000009", "test", [("d13", "PA"), ("d14", "LATERAL")], MERGED),
]


def jpeg_bytes(seed: int, size=(40, 36)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(xray_like(seed, *size)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_mimic_tree(root: Path, studies=MIMIC_STUDIES) -> Path:
    metadata, splits = [], []
    for index, (subject, study, split, images, report) in enumerate(studies):
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        (folder / f"s{study}").mkdir(parents=True, exist_ok=True)
        for number, (dicom_id, view) in enumerate(images):
            (folder / f"s{study}" / f"{dicom_id}.jpg").write_bytes(jpeg_bytes(index * 10 + number))
            metadata.append([dicom_id, subject, study, "CHEST (PA AND LAT)", view, 36, 40])
            splits.append([dicom_id, study, subject, split])
        if report is not None:
            (folder / f"s{study}.txt").write_text(report)
    splits.append(["d99", "59999999", "10009999", "train"])  # listed, not downloaded: a partial download
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv",
              ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns"],
              metadata)  # fmt: skip
    write_csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"], splits)
    return root


OPENI_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
  <uId id="CXR{number}"/>
  <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
    <Article PubModel="Electronic">
      <Abstract>
        <AbstractText Label="COMPARISON">None.</AbstractText>
        <AbstractText Label="INDICATION">XXXX-year-old with chest pain.</AbstractText>
        {findings}
        <AbstractText Label="IMPRESSION">{impression}</AbstractText>
      </Abstract>
    </Article>
  </MedlineCitation>
  {images}
</eCitation>
"""


def make_openi_tree(root: Path, count: int = 8) -> tuple[Path, Path]:
    reports, pngs = root / "ecgen-radiology", root / "NLMCXR_png"
    reports.mkdir(parents=True)
    pngs.mkdir()
    for number in range(1, count + 1):
        ids = [f"CXR{number}_1_IM-{number:04d}-1001", f"CXR{number}_1_IM-{number:04d}-2001"]
        findings = "" if number == 2 else (
            f'<AbstractText Label="FINDINGS">The heart is normal in size. Report {number} lungs are clear.</AbstractText>')
        images = "\n  ".join(f'<parentImage id="{i}"><caption>Xray Chest PA and Lateral</caption></parentImage>' for i in ids)
        (reports / f"{number}.xml").write_text(OPENI_XML.format(number=number, findings=findings, images=images,
                                                                impression="No acute disease."))  # fmt: skip
        for index, image_id in enumerate(ids if number != 3 else []):  # report 3: its PNGs are missing
            Image.fromarray(xray_like(number * 10 + index, 36, 32)).save(pngs / f"{image_id}.png")
    return reports, pngs


DICOM_STUDIES = [  # accession, patient, [view], report
    ("ACC1", "PAT-A", ["PA", "LATERAL"], "FINDINGS: Small right pleural effusion.\n\nIMPRESSION: Effusion."),
    ("ACC2", "PAT-A", ["AP"], "FINDINGS: Lungs are clear. No effusion.\n\nIMPRESSION: Normal."),
    ("ACC3", "PAT-B", ["PA"], "Findings without a header: the heart is enlarged."),
    ("ACC4", "PAT-C", ["LL"], "FINDINGS: Lateral only.\n\nIMPRESSION: Normal."),
    ("ACC5", "PAT-D", ["PA"], "FINDINGS: Mild cardiomegaly.\n\nIMPRESSION: Cardiomegaly."),
]


def write_dicom(path: Path, pixels: np.ndarray | None, modality="DX", sop_class=None, **tags) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class or SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Modality = modality
    for name, value in tags.items():
        setattr(dataset, name, value)
    if pixels is not None:
        dataset.Rows, dataset.Columns = pixels.shape
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
        dataset.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def make_dicom_folder(root: Path) -> tuple[Path, Path]:
    folder = root / "export"
    for index, (accession, patient, views, _) in enumerate(DICOM_STUDIES):
        for number, view in enumerate(views):
            pixels = xray_like(index * 10 + number, 40, 36).astype(np.uint16) * 16
            write_dicom(folder / patient / accession / f"IM{number}", pixels, AccessionNumber=accession,
                        PatientID=patient, StudyInstanceUID=f"1.2.3.{index}", ViewPosition=view)  # fmt: skip
    write_dicom(folder / "PAT-A" / "ACC1" / "SR0", None, modality="SR", sop_class="1.2.840.10008.5.1.4.1.1.88.11",
                AccessionNumber="ACC1", PatientID="PAT-A")  # a structured report: skipped, not an error
    (folder / "README.txt").write_text("exported from PACS")
    reports = write_csv(root / "reports.csv", ["AccessionNumber", "report"], [[a, r] for a, _, _, r in DICOM_STUDIES])
    return folder, reports


def prepare(argv: list, capsys) -> str:
    assert main(["prepare", *map(str, argv)]) == 0
    return capsys.readouterr().out


def prepare_fails(argv: list, capsys) -> str:
    assert main(["prepare", *map(str, argv)]) == 2
    return capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Section parser
# ---------------------------------------------------------------------------------------------


def test_sections_of_mimic_reports():
    assert extract_target(STANDARD, "findings") == (
        "There is no focal consolidation, pleural effusion or pneumothorax. The cardiomediastinal silhouette is "
        "normal. Compared to, the heart size is unchanged.", None)
    assert extract_target(STANDARD, "impression") == ("No acute cardiopulmonary process.", None)
    assert extract_target(STANDARD, "both")[0].endswith("unchanged. No acute cardiopulmonary process.")
    # no FINDINGS/IMPRESSION header: the last paragraph, as MIMIC's create_section_files.py takes it
    assert [s.name for s in split_sections(NO_FINDINGS_HEADER)] == ["preamble", "history", "last_paragraph"]
    assert extract_target(NO_FINDINGS_HEADER, "findings")[0] == "Heart size is normal. Small left pleural effusion. No pneumothorax."
    merged = "Moderate cardiomegaly. Mild pulmonary edema. No focal consolidation."
    assert extract_target(MERGED, "findings") == extract_target(MERGED, "impression") == (merged, None)
    assert extract_target(MERGED, "both") == (merged, None)  # once, not twice
    assert extract_target(IMPRESSION_ONLY, "findings") == (None, "no findings section")
    assert extract_target(ONLY_DEID, "findings") == (None, "empty after cleaning")
    assert extract_target(ONLY_DEID, "both") == (None, "empty after cleaning")  # "___" marks only
    # typos and view headers normalise (upstream's table): "FINDNGS", "CHEST, PA AND LATERAL"
    assert extract_target("\n FINDNGS: Clear lungs.\n", "findings")[0] == "Clear lungs."
    assert extract_target("\n CHEST, PA AND LATERAL: Clear lungs.\n \n CONCLUSION: Normal.\n", "both")[0] == "Clear lungs. Normal."


def test_split_by_patient_is_seeded_stable_and_complete():
    patients = [f"p{i}" for i in range(5000)]
    first = split_by_patient(patients, (0.7, 0.1, 0.2), seed=3)
    assert first == split_by_patient(list(reversed(patients)), (0.7, 0.1, 0.2), seed=3)
    assert first != split_by_patient(patients, (0.7, 0.1, 0.2), seed=4)
    shares = [sum(s == name for s in first.values()) / len(patients) for name in ("train", "val", "test")]
    assert np.allclose(shares, [0.7, 0.1, 0.2], atol=0.02)  # each patient's chances, not exact counts
    # a re-export with 10% more patients (and some gone) moves nobody: the split is the patient's and the seed's
    again = split_by_patient(patients[250:] + [f"new{i}" for i in range(500)], (0.7, 0.1, 0.2), seed=3)
    assert sum(again[p] != first[p] for p in patients[250:]) == 0
    assert set(split_by_patient(patients, (1, 0, 0)).values()) == {"train"}
    with pytest.raises(PrepareError, match="sum to 1"):
        split_by_patient(patients, (0.7, 0.2, 0.2))


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------


def test_prepare_mimic(tmp_path, capsys):
    root = make_mimic_tree(tmp_path / "mimic-cxr-jpg")
    out = prepare(["mimic", "--root", root, "--out", tmp_path / "prepared"], capsys)
    assert "kept 5 studies, 9 images: train 3 (2 patients), val 1 (1 patient), test 1 (1 patient)" in out
    for reason, count in [("no findings section", 1), ("no frontal image", 1), ("empty after cleaning", 1),
                          ("no report", 1), ("view beyond --max-views", 1)]:  # fmt: skip
        assert any(line.split() [-1] == str(count) and reason in line for line in out.splitlines()), (reason, out)
    assert "1 studies of mimic-cxr-2.0.0-split.csv have no images" in out
    assert format_of(str(tmp_path / "prepared")).name == "saved"
    studies = load_studies(tmp_path / "prepared")
    assert {name: sorted(studies[name]["id"]) for name in studies} == {
        "train": ["s50000001", "s50000002", "s50000008"], "val": ["s50000003"], "test": ["s50000009"]}
    row = studies["train"][0]
    assert row["report"].startswith("There is no focal consolidation") and "___" not in row["report"]
    assert [image["path"] for image in row["images"]] == ["d01.jpg", "d02.jpg"]
    assert row["images"][0]["bytes"] == (root / "files/p10/p10000001/s50000001/d01.jpg").read_bytes()  # as is
    s8 = studies["train"][studies["train"]["id"].index("s50000008")]
    assert [Path(image["path"]).stem for image in s8["images"]] == ["d11", "d12"]  # PA before AP, then the lateral
    assert row["labels"]["Pleural Effusion"] == 0 and row["split"] == "train"
    assert load_studies(tmp_path / "prepared", splits=["test"]).keys() == {"test"}
    summary = json.loads((tmp_path / "prepared" / "prepare.json").read_text())
    assert summary["kept"] == {"train": 3, "val": 1, "test": 1} and summary["dropped"]["no frontal image"] == 1


def test_prepare_openi_then_finetune_one_step(tmp_path, capsys):
    reports, pngs = make_openi_tree(tmp_path / "iu")
    out = prepare(["openi", "--reports", reports, "--images", pngs, "--out", tmp_path / "prepared", "--seed", 1,
                   "--fractions", 0.5, 0.25, 0.25, "--max-side", 24], capsys)  # fmt: skip
    assert "kept 6 studies, 12 images: train 3 (3 patients), val 2 (2 patients), test 1 (1 patient)" in out
    assert re.search(r"no findings section +1\n", out) and re.search(r"no image file +1\n", out)
    assert re.search(r"image file missing +2\n", out)
    studies = load_studies(tmp_path / "prepared")
    ids = sorted(i for name in studies for i in studies[name]["id"])
    assert ids == ["CXR1", "CXR4", "CXR5", "CXR6", "CXR7", "CXR8"]
    again = prepare(["openi", "--reports", reports, "--images", pngs, "--out", tmp_path / "again", "--seed", 1,
                     "--fractions", 0.5, 0.25, 0.25, "--max-side", 24], capsys)  # fmt: skip
    assert {n: load_studies(tmp_path / "again")[n]["id"] for n in studies} == {n: studies[n]["id"] for n in studies}
    image = Image.open(io.BytesIO(studies["train"][0]["images"][0]["bytes"]))
    assert image.format == "PNG" and max(image.size) == 24  # --max-side: downscaled and stored as PNG
    assert "Report" in studies["train"][0]["report"] and again

    model = tmp_path / "model"
    assert main(["init", "--preset", "tiny", "--out", str(model)]) == 0
    assert main(["finetune", "--model", str(model), "--data", str(tmp_path / "prepared"), "--output_dir",
                 str(tmp_path / "run"), "--max_steps", "1", "--eval_split", "", "--use_cpu", "True",
                 "--report_to", "none"]) == 0  # fmt: skip
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()


def test_prepare_dicom_with_pseudonyms(tmp_path, capsys):
    folder, reports = make_dicom_folder(tmp_path)
    out = prepare(["dicom", "--folder", folder, "--reports", reports, "--pseudonymize", "s3cret", "--section", "both",
                   "--out", tmp_path / "prepared", "--fractions", 0.34, 0.33, 0.33], capsys)  # fmt: skip
    assert "kept 3 studies, 4 images" in out and "no frontal image" in out
    assert "no findings or impression section" in out  # ACC3: one headerless paragraph (as MIT-LCP's parser)
    assert "DICOM document, not an image" in out and "not a DICOM file" in out
    studies = load_studies(tmp_path / "prepared")
    rows = {row["id"]: row for name in studies for row in studies[name]}
    key = {accession: f"study-{pseudonym(accession, 's3cret')}" for accession, *_ in DICOM_STUDIES}
    assert set(rows) == {key["ACC1"], key["ACC2"], key["ACC5"]}
    assert rows[key["ACC1"]]["split"] == rows[key["ACC2"]]["split"]  # one patient, one split
    assert rows[key["ACC1"]]["report"] == "Small right pleural effusion. Effusion."
    assert [i["path"] for i in rows[key["ACC1"]]["images"]] == [f"{key['ACC1']}_0.png", f"{key['ACC1']}_1.png"]
    assert Image.open(io.BytesIO(rows[key["ACC1"]]["images"][0]["bytes"])).size == (36, 40)
    saved = (tmp_path / "prepared" / "prepare.json").read_text() + "".join(r["report"] + str(r["images"][0]["path"]) for r in rows.values())
    assert "PAT-A" not in saved and "ACC1" not in saved and "s3cret" not in saved


def test_dicom_views_without_view_position_are_read_from_the_view_code_or_the_description(tmp_path, capsys):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    def code(meaning):
        item = Dataset()
        item.CodeMeaning = meaning
        return Sequence([item])

    folder, pixels = tmp_path / "export", xray_like(1, 40, 36).astype(np.uint16) * 16
    studies = {  # accession: [(tags of each image)]; none has ViewPosition
        "ACC1": [{"SeriesDescription": "CHEST LAT"}, {"ViewCodeSequence": code("postero-anterior")}],  # lateral first
        "ACC2": [{"ProtocolName": "Thorax AP portable"}],
        "ACC3": [{"SeriesDescription": "CHEST"}],  # names no view
        "ACC4": [{"SeriesDescription": "CHEST PA AND LAT"}],  # a combined series: no single view
    }
    for index, (accession, images) in enumerate(studies.items()):
        for number, tags in enumerate(images):
            view_pixels = pixels[:, : 30 + number]  # each view of a study its own width, to tell them apart
            write_dicom(folder / accession / f"IM{number}", view_pixels, AccessionNumber=accession, PatientID=f"P{index}",
                        StudyInstanceUID=f"1.2.9.{index}", **tags)  # fmt: skip
    reports = write_csv(tmp_path / "reports.csv", ["AccessionNumber", "report"],
                        [[a, "FINDINGS: Mild cardiomegaly.\n\nIMPRESSION: Cardiomegaly."] for a in studies])
    out = prepare(["dicom", "--folder", folder, "--reports", reports, "--out", tmp_path / "prepared",
                   "--fractions", 1, 0, 0], capsys)  # fmt: skip
    assert "kept 2 studies, 3 images" in out
    assert re.search(r"no view tag \(ViewPosition, ViewCodeSequence, SeriesDescription, ProtocolName\) +2\n", out)
    rows = {row["id"]: row for row in load_studies(tmp_path / "prepared")["train"]}
    assert set(rows) == {"ACC1", "ACC2"}
    widths = [Image.open(io.BytesIO(image["bytes"])).size[0] for image in rows["ACC1"]["images"]]
    assert widths == [31, 30]  # the frontal (PA by its view code) first, then the lateral (LAT in its series)


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error naming the file
# ---------------------------------------------------------------------------------------------


def test_unreadable_xml_is_named(tmp_path, capsys):
    reports, pngs = make_openi_tree(tmp_path / "iu", count=2)
    (reports / "2.xml").write_text("<eCitation><uId id='CXR2'>")  # truncated
    err = prepare_fails(["openi", "--reports", reports, "--images", pngs, "--out", tmp_path / "out"], capsys)
    assert "2.xml: not readable XML" in err and not (tmp_path / "out").exists()


def test_report_without_a_study_is_named(tmp_path, capsys):
    folder, reports = make_dicom_folder(tmp_path)
    with reports.open("a") as file:
        file.write("ACC404,FINDINGS: orphan.\n")
    err = prepare_fails(["dicom", "--folder", folder, "--reports", reports, "--out", tmp_path / "out"], capsys)
    assert "reports.csv: 1 report(s) without a study" in err and "reports.csv:15: AccessionNumber 'ACC404'" in err


def test_gzipped_jsonl_reports_are_read_and_a_bad_line_is_named(tmp_path, capsys):
    import gzip
    import json

    folder, _ = make_dicom_folder(tmp_path)
    lines = [json.dumps({"AccessionNumber": a, "report": r}) for a, _, _, r in DICOM_STUDIES]
    reports = tmp_path / "reports.jsonl.gz"
    reports.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    out = prepare(["dicom", "--folder", folder, "--reports", reports, "--out", tmp_path / "prepared",
                   "--fractions", 0.34, 0.33, 0.33], capsys)  # fmt: skip
    assert "kept 3 studies, 4 images" in out
    reports.write_bytes(gzip.compress(("\n".join([lines[0], "{not json", *lines[1:]]) + "\n").encode()))
    err = prepare_fails(["dicom", "--folder", folder, "--reports", reports, "--out", tmp_path / "again"], capsys)
    assert "reports.jsonl.gz:2: not valid JSON" in err and not (tmp_path / "again").exists()


def test_dicom_without_pixels_is_named(tmp_path, capsys):
    folder, reports = make_dicom_folder(tmp_path)
    write_dicom(folder / "PAT-B" / "ACC3" / "IM9", None, AccessionNumber="ACC3", PatientID="PAT-B", ViewPosition="PA")
    err = prepare_fails(["dicom", "--folder", folder, "--reports", reports, "--out", tmp_path / "out"], capsys)
    assert "IM9: DICOM has no pixel data" in err and "--bad-files skip" in err


def test_split_file_that_disagrees_with_the_folders_is_named(tmp_path, capsys):
    root = make_mimic_tree(tmp_path / "mimic", MIMIC_STUDIES[:2])
    split = root / "mimic-cxr-2.0.0-split.csv"
    split.write_text(split.read_text().replace("d03,50000002,10000001", "d03,50000001,10000001"))
    err = prepare_fails(["mimic", "--root", root, "--out", tmp_path / "out"], capsys)
    assert "mimic-cxr-2.0.0-split.csv disagrees with the image folders" in err
    assert "line 4: dicom_id d03 is under subject 10000001, study 50000001" in err


def test_patient_in_two_splits_is_an_error(tmp_path, capsys):
    studies = [MIMIC_STUDIES[0], ("10000001", "50000002", "test", [("d03", "AP")], STANDARD)]
    root = make_mimic_tree(tmp_path / "mimic", studies)
    err = prepare_fails(["mimic", "--root", root, "--out", tmp_path / "out"], capsys)
    assert "1 patient(s) have studies in more than one split" in err
    assert "patient p10000001: study s50000001 in 'train', study s50000002 in 'test'" in err


def test_saved_folder_with_another_schema_is_refused(tmp_path):
    import datasets

    from trrg.processing.studies import StudyDataError

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]})}).save_to_disk(str(tmp_path / "other"))
    with pytest.raises(StudyDataError, match="lacks the study columns"):
        load_studies(tmp_path / "other")
