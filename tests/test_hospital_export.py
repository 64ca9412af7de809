"""A hospital's own export, end to end: a PACS tree (MRN/DATE_ACCESSION/SERnnn/IMnnnnn, some files
without an extension) of CR/DX images whose views are named by ViewPosition, by the view code only
or by the series description only; MONOCHROME1, 12-bit values in 16-bit storage with and without a
window, RLE and JPEG-baseline transfer syntaxes; a RIS CSV as Excel writes it ("CSV UTF-8": a
byte-order mark, CRLF, quoted multi-line reports with EXAMINATION/FINDINGS/IMPRESSION and a
sign-off line); and the awkward cases (a truncated file, a DICOM without pixels, a study without a
report, a report without a study, an addendum row and a superseded preliminary report repeating an
accession, two patients under one accession, a lateral-only study, a study no tag names the view
of, a structured report, a stray text file).

``trrg prepare dicom`` on it: the counts reconcile (found = kept + dropped), the audit lists every
dropped study and skipped item with its reason and no raw MRN or accession, the pseudonym key file
maps them back from outside the data set, a re-export with 10% more patients moves no study to
another split, the folder loads under the name it recorded, and the image processor reads the
same two DICOM files lateral-first exactly as frontal-first.

And the whole route on it: the prepared folder fine-tunes a phantom demo model (the model then names
the prepared data set, never a path, and evaluates the val split while training), ``trrg evaluate``
scores the test split (CE metrics, out-of-distribution rate), ``trrg export`` writes the hub folder,
and the Space served from that folder reads an extension-less DICOM of the export, under a banner
naming the hospital's data set."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trrg.cli import main
from trrg.modeling.image_processing_trrg import TRRGImageProcessor, rescale_to_uint8
from trrg.processing.prepare.dicom_folder import APPENDED, SUPERSEDED
from trrg.processing.prepare.plan import read_report_table
from trrg.processing.studies import load_studies

SALT = "site-secret"
CR_IMAGE, DX_IMAGE = "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1"
SR_DOCUMENT = "1.2.840.10008.5.1.4.1.1.88.11"

REPORT = """EXAMINATION: CHEST {views}

FINDINGS:
{findings}

IMPRESSION:
{impression}

Electronically signed by: Dr. Jane Roe, MD on 2024-03-05 14:02"""
ADDENDUM = """ADDENDUM:
Compared with the radiograph of 2023-11-02, unchanged.

Electronically signed by: Dr. John Doe, MD on 2024-03-06 09:10"""


# ---------------------------------------------------------------------------------------------
# The export, built here with pydicom
# ---------------------------------------------------------------------------------------------


def pixels_12bit(seed: int, height: int = 40, width: int = 36) -> np.ndarray:
    """12-bit values (0..4095) in uint16, as a detector stores them: dense (bright) bone in the middle."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(300, 3800, width)[None, :] * np.ones((height, 1))
    return np.clip(ramp + rng.normal(0, 60, (height, width)), 0, 4095).astype(np.uint16)


def write_image(path: Path, pixels: np.ndarray | None, mrn: str, accession: str, *, modality: str = "DX",
                syntax: str = "native", photometric: str = "MONOCHROME2", **tags) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = tags.pop("sop_class", CR_IMAGE if modality == "CR" else DX_IMAGE)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Modality, dataset.PatientID, dataset.AccessionNumber = modality, mrn, accession
    dataset.StudyInstanceUID = f"1.2.826.0.1.{accession[3:]}"
    for name, value in tags.items():
        setattr(dataset, name, value)
    if pixels is not None:
        if photometric == "MONOCHROME1":  # stored inverted: low values display bright
            pixels = 4095 - pixels
        dataset.Rows, dataset.Columns = pixels.shape
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
        dataset.PixelData = pixels.astype(np.uint16).tobytes()
        if syntax == "rle":
            dataset.compress(RLELossless)  # pydicom's own RLE encoder: no extra package
        elif syntax == "jpeg":  # pydicom cannot encode JPEG without plugins; Pillow can, and decodes it back
            buffer = io.BytesIO()
            Image.fromarray((pixels >> 4).astype(np.uint8)).save(buffer, format="JPEG", quality=95)
            dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
            dataset.PixelData = encapsulate([buffer.getvalue()])
            dataset["PixelData"].VR = "OB"
            meta.TransferSyntaxUID = JPEGBaseline8Bit
    elif modality != "SR":
        dataset.Rows, dataset.Columns = 40, 36  # an image header whose pixels never arrived
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def view_code(meaning: str):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.CodeMeaning = meaning
    return Sequence([item])


# accession, MRN, date, [(series, tags, options)], rows of the RIS (date, text) or ()
STUDIES = [
    ("ACC1001", "7000001", "20240305",
     [(1, {"ViewPosition": "PA"}, {}),
      (2, {"ViewPosition": "LATERAL", "WindowCenter": 2048, "WindowWidth": 1600}, {"extension": ""})],
     [("2024-03-05 14:02", "PA AND LATERAL", "Heart size is normal. The lungs are clear.", "No acute process."),
      ("2024-03-06 09:10", ADDENDUM)]),
    ("ACC1002", "7000001", "20240402",
     [(1, {"ProtocolName": "THORAX AP PORTABLE"}, {"modality": "CR", "extension": ""})],
     [("2024-04-02 08:00", "AP PORTABLE", "Mild cardiomegaly. Small left pleural effusion.", "Cardiomegaly.")]),
    ("ACC1003", "7000002", "20240311",  # the lateral is series 1: the tree gives it first
     [(1, {"SeriesDescription": "CHEST LAT"}, {}),
      (2, {"ViewCodeSequence": view_code("postero-anterior")}, {"extension": ""})],
     [("2024-03-11 17:30", "PA AND LATERAL", "Right lower lobe consolidation.", "Pneumonia."),  # final
      ("2024-03-11 10:05", "PA AND LATERAL", "Possible right lower lobe opacity.", "Preliminary.")]),
    ("ACC1004", "7000003", "20240312",
     [(1, {"ViewPosition": "PA"}, {"syntax": "rle", "photometric": "MONOCHROME1"})],
     [("2024-03-12 12:00", "PA", "No pneumothorax. Lungs are clear.", "Normal chest.")]),
    ("ACC1005", "7000004", "20240313",
     [(1, {"ViewPosition": "PA"}, {"syntax": "jpeg"})],
     [("2024-03-13 12:00", "PA", "Left basilar atelectasis.", "Atelectasis.")]),
    ("ACC1006", "7000005", "20240314",  # the frontal file is truncated
     [(1, {"ViewPosition": "PA"}, {"truncate": True}), (2, {"ViewPosition": "LATERAL"}, {})],
     [("2024-03-14 12:00", "PA AND LATERAL", "Heart size is normal.", "Normal.")]),
    ("ACC1007", "7000006", "20240315",  # the lateral's pixels never arrived
     [(1, {"ViewPosition": "PA"}, {}), (2, {"ViewPosition": "LATERAL"}, {"no_pixels": True})],
     [("2024-03-15 12:00", "PA AND LATERAL", "Enlarged cardiac silhouette.", "Cardiomegaly.")]),
    ("ACC1008", "7000007", "20240316", [(1, {"ViewPosition": "PA"}, {"extension": ""})], []),  # no report
    ("ACC1009", "7000008", "20240317", [(1, {"ViewPosition": "PA"}, {})],  # and a second patient, below
     [("2024-03-17 12:00", "PA", "Lungs are clear.", "Normal.")]),
    ("ACC1010", "7000010", "20240318", [(1, {"ViewPosition": "LL"}, {})],
     [("2024-03-18 12:00", "LATERAL", "Lungs are clear.", "Normal.")]),
    ("ACC1011", "7000011", "20240319", [(1, {"SeriesDescription": "CHEST"}, {})],
     [("2024-03-19 12:00", "CHEST", "Lungs are clear.", "Normal.")]),
]  # fmt: skip
EXTRA_PATIENT = ("ACC1012", "7000012", "20240320", [(1, {"ViewPosition": "PA"}, {})],
                 [("2024-03-20 12:00", "PA", "Lungs are clear.", "Normal.")])  # fmt: skip
ORPHAN = ("ACC9999", "2024-03-21 12:00", REPORT.format(views="PA", findings="Clear.", impression="Normal."))


def study_folder(export: Path, accession: str, mrn: str, date: str) -> Path:
    return export / mrn / f"{date}_{accession}"


def build_export(root: Path, studies=STUDIES, orphan: bool = True) -> tuple[Path, Path]:
    """The PACS tree and the RIS CSV (with a report of no study: ``orphan``). Every sixth file has no
    extension, besides those chosen above."""
    export, rows, number = root / "export", [], 0
    for index, (accession, mrn, date, images, reports) in enumerate(studies):
        for series, tags, options in images:
            number += 1
            extension = options.get("extension", "" if number % 6 == 0 else ".dcm")
            path = study_folder(export, accession, mrn, date) / f"SER{series:03d}" / f"IM{number:05d}{extension}"
            pixels = None if options.get("no_pixels") else pixels_12bit(index * 10 + series)
            write_image(path, pixels, mrn, accession, modality=options.get("modality", "DX"),
                        syntax=options.get("syntax", "native"), photometric=options.get("photometric", "MONOCHROME2"),
                        StudyDate=date, **tags)  # fmt: skip
            if options.get("truncate"):
                path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
        for report in reports:
            text = report[1] if len(report) == 2 else REPORT.format(views=report[1], findings=report[2], impression=report[3])
            rows.append([accession, report[0], text.replace("\n", "\r\n")])
    if any(accession == "ACC1009" for accession, *_ in studies):  # a second patient's image under ACC1009
        write_image(study_folder(export, "ACC1009", "7000009", "20240317") / "SER001" / "IM09999.dcm",
                    pixels_12bit(99), "7000009", "ACC1009", ViewPosition="PA")  # fmt: skip
    write_image(study_folder(export, "ACC1001", "7000001", "20240305") / "SER099" / "IM00099", None, "7000001",
                "ACC1001", modality="SR", sop_class=SR_DOCUMENT)  # a structured report: not an image
    (export / "Thumbs.db").write_bytes(b"\x00" * 300)
    if orphan:
        rows.append([ORPHAN[0], ORPHAN[1], ORPHAN[2].replace("\n", "\r\n")])
    return export, write_excel_csv(root / "ris_export.csv", ["AccessionNumber", "ReportDate", "Report Text"], rows)


def write_excel_csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    """As Excel's "CSV UTF-8" writes it: a byte-order mark, CRLF, every field quoted."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=delimiter, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(b"\xef\xbb\xbf" + buffer.getvalue().encode())
    return path


def prepare(argv: list, capsys) -> str:
    assert main(["prepare", "dicom", *map(str, argv)]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def prepare_fails(argv: list, capsys) -> str:
    assert main(["prepare", "dicom", *map(str, argv)]) == 2
    return capsys.readouterr().err


def options(export: Path, reports: Path, out: Path, *extra) -> list:
    return ["--folder", export, "--reports", reports, "--report-column", "Report Text", "--date-column", "ReportDate",
            "--bad-files", "skip", "--pseudonymize", SALT, "--section", "both", "--fractions", 0.5, 0.25, 0.25,
            "--out", out, *extra]  # fmt: skip


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("hospital")
    return (root, *build_export(root))


def stored(row: dict, view: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(row["images"][view]["bytes"])))


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------


def test_hospital_export_end_to_end(export, capsys):
    root, folder, reports = export
    keys, out = root / "site-only" / "trrg_pseudonyms.csv", root / "prepared"
    printed = prepare(options(folder, reports, out, "--pseudonym-key-file", keys), capsys)

    # counts reconcile: every study found (11 accessions with images) is kept or dropped
    summary = json.loads((out / "prepare.json").read_text())
    kept, dropped = sum(summary["kept"].values()), sum(summary["dropped"].values())
    assert summary["found"] == 11 and kept == 6 and kept + dropped == summary["found"]
    assert "studies found 11 = kept 6 + dropped 5" in printed
    assert summary["dropped"] == {"first (frontal) view unreadable": 1, "no report": 1, "no frontal image": 1,
                                  "images of 2 patients under one AccessionNumber": 1,
                                  "no view tag (ViewPosition, ViewCodeSequence, SeriesDescription, ProtocolName)": 1}
    assert summary["skipped"] == {"not a DICOM file": 1, "DICOM document, not an image (SR, PR, KO, DICOMDIR)": 1,
                                  "DICOM without pixel data": 1, "report without a study": 1, "unreadable image": 1}
    assert summary["duplicates"] == {APPENDED: 1, SUPERSEDED: 1}  # duplicates, not dropped studies

    # the audit: one line per dropped study, skipped item and duplicate row, pseudonymised
    audit = [json.loads(line) for line in (out / "prepare_audit.jsonl").read_text().splitlines()]
    for outcome, counts in (("dropped study", summary["dropped"]), ("skipped", summary["skipped"]),
                            ("duplicate report row", summary["duplicates"])):  # fmt: skip
        lines = [line for line in audit if line["outcome"] == outcome]
        assert {reason: sum(line["reason"] == reason for line in lines) for reason in counts} == counts
        assert all(line.get("study") or line.get("file") or line.get("where") for line in lines)
    key = {row["pseudonym"]: row["original"] for row in csv.DictReader(keys.open())}
    dropped_studies = {key[line["study"]]: line["reason"] for line in audit if line["outcome"] == "dropped study"}
    assert dropped_studies == {"ACC1006": "first (frontal) view unreadable", "ACC1008": "no report",
                               "ACC1009": "images of 2 patients under one AccessionNumber", "ACC1010": "no frontal image",
                               "ACC1011": "no view tag (ViewPosition, ViewCodeSequence, SeriesDescription, ProtocolName)"}
    skipped_files = {line["reason"]: key.get(line.get("file")) for line in audit if line["outcome"] == "skipped"}
    assert skipped_files["not a DICOM file"] == "Thumbs.db"
    assert skipped_files["DICOM without pixel data"].startswith("7000006/20240315_ACC1007/SER002/")
    assert skipped_files["unreadable image"].startswith("7000005/20240314_ACC1006/SER001/")
    two_patients = next(line for line in audit if line["reason"].startswith("images of 2 patients"))
    assert sorted(key[p] for p in two_patients["patients"]) == ["7000008", "7000009"]
    everything = (out / "prepare_audit.jsonl").read_text() + (out / "prepare.json").read_text()
    assert not re.search(r"7000\d\d\d|ACC\d{4}|site-secret|Roe", everything)  # no MRN, accession, salt, name

    # the key file stays with the site: outside the data set, readable by its owner only
    assert out not in keys.parents and (keys.stat().st_mode & 0o077) == 0
    assert not any("pseudonym" in path.name for path in out.rglob("*"))

    # the rows: duplicates resolved by date, sign-offs gone, views frontal first, pixels decoded right
    studies = load_studies(out)
    rows = {key[row["id"]]: row for split in studies.values() for row in split}
    assert sorted(rows) == ["ACC1001", "ACC1002", "ACC1003", "ACC1004", "ACC1005", "ACC1007"]
    assert rows["ACC1003"]["report"] == "Right lower lobe consolidation. Pneumonia."  # the final, not the preliminary
    assert rows["ACC1001"]["report"] == "Heart size is normal. The lungs are clear. No acute process."
    assert not any("signed" in row["report"].lower() for row in rows.values())
    assert len(rows["ACC1007"]["images"]) == 1  # its pixel-less lateral skipped, the study kept
    # no window: min/max, bone bright; ACC1003's PA (series 2, given second) stored first; ACC1004 MONOCHROME1 + RLE
    for accession, seed in (("ACC1001", 1), ("ACC1003", 22), ("ACC1004", 31)):
        source = pixels_12bit(seed).astype(np.float64)
        expected = rescale_to_uint8(source, source.min(), source.max())
        assert np.abs(stored(rows[accession], 0).astype(int) - expected).max() <= 1, accession
    windowed = stored(rows["ACC1001"], 1)  # 12-bit with a window 1248..2848: the ends clip
    assert (windowed == 0).mean() > 0.1 and (windowed == 255).mean() > 0.1
    source = (pixels_12bit(41) >> 4).astype(np.float64)  # ACC1005: JPEG baseline, 8-bit, lossy
    expected = rescale_to_uint8(source, source.min(), source.max())
    assert np.abs(stored(rows["ACC1005"], 0).astype(int) - expected).mean() < 3

    # provenance: the folder loads under the name it recorded, never a path
    names = {split.info.dataset_name for split in studies.values()}
    assert names == {summary["name"]} and re.fullmatch(r"dicom data set [0-9a-f]{8}", summary["name"])


def test_a_re_export_with_more_patients_moves_no_study(export, capsys, tmp_path):
    root, folder, reports = export
    first = prepare(options(folder, reports, tmp_path / "first"), capsys)
    bigger = tmp_path / "bigger"  # the same export plus 10% more patients (one)
    more, more_reports = build_export(bigger, [*STUDIES, EXTRA_PATIENT])
    prepare(options(more, more_reports, tmp_path / "second"), capsys)
    split_of = [{row["id"]: row["split"] for split in load_studies(tmp_path / out).values() for row in split}
                for out in ("first", "second")]  # fmt: skip
    common = split_of[0].keys() & split_of[1].keys()
    assert len(common) == len(split_of[0]) == 6 and len(split_of[1]) == 7
    assert [study for study in common if split_of[0][study] != split_of[1][study]] == []
    assert len(set(split_of[1].values())) > 1 and first


def test_the_processor_reads_a_study_lateral_first_as_frontal_first(export):
    _, folder, _ = export
    lateral, frontal = sorted(path for path in study_folder(folder, "ACC1003", "7000002", "20240311").rglob("IM*"))
    assert frontal.suffix == "" and lateral.suffix == ".dcm"  # series 2 (the PA) has no extension
    processor = TRRGImageProcessor(image_size=32)
    as_sent = processor([[lateral, frontal]])["pixel_values"]
    assert torch.equal(as_sent, processor([[frontal, lateral]])["pixel_values"])
    assert not torch.equal(as_sent[0, 0], as_sent[0, 1])


# ---------------------------------------------------------------------------------------------
# What the site is told when something does not fit
# ---------------------------------------------------------------------------------------------


def test_an_excel_csv_reads_with_or_without_its_byte_order_mark_and_a_missing_column_names_the_options(tmp_path, capsys):
    rows = [["ACC1", "FINDINGS:\r\nClear.\r\n\r\nIMPRESSION:\r\nNormal."], ["ACC2", "FINDINGS: Effusion."]]
    for delimiter in (",", ";"):  # Excel writes ";" where the decimal mark is a comma
        path = write_excel_csv(tmp_path / f"ris{delimiter == ';'}.csv", ["AccessionNumber", "report"], rows, delimiter)
        read = list(read_report_table(path, "AccessionNumber", "report"))
        assert [(row.key, row.where) for row in read] == [("ACC1", f"{path}:2"), ("ACC2", f"{path}:7")]
        assert read[0].text.startswith("FINDINGS:\r\nClear.")
    export, reports = build_export(tmp_path / "site", STUDIES[:1])
    err = prepare_fails(["--folder", export, "--reports", reports, "--out", tmp_path / "out"], capsys)
    assert "lacks the column(s) ['report']" in err and "read as UTF-8, with or without a byte-order mark" in err
    assert "['AccessionNumber', 'ReportDate', 'Report Text']" in err  # the names, not '\ufeff"AccessionNumber"'
    assert "--report-column" in err and "--key-column" in err and not (tmp_path / "out").exists()
    dates = write_excel_csv(tmp_path / "dates.csv", ["AccessionNumber", "ReportDate", "report"],
                            [["ACC1001", "05/03/2024 14:02", "FINDINGS: Clear."]])  # a locale's date, ambiguous
    err = prepare_fails(["--folder", export, "--reports", dates, "--date-column", "ReportDate", "--out", tmp_path / "out"],
                        capsys)  # fmt: skip
    assert "dates.csv:2: ReportDate '05/03/2024 14:02' is not a date" in err and "yyyy-mm-dd hh:mm" in err


def test_two_patients_under_one_accession_stop_the_run_unless_skipped(tmp_path, capsys):
    export, reports = build_export(tmp_path, [STUDIES[8]], orphan=False)
    args = ["--folder", export, "--reports", reports, "--report-column", "Report Text", "--out", tmp_path / "out"]
    err = prepare_fails(args, capsys)
    assert "study AccessionNumber=ACC1009 has images of 2 patients" in err and "--bad-files skip" in err


def test_the_pseudonym_key_file_never_goes_inside_the_data_set(export, tmp_path, capsys):
    _, folder, reports = export
    out = tmp_path / "prepared"
    err = prepare_fails(options(folder, reports, out, "--pseudonym-key-file", out / "key.csv"), capsys)
    assert "is inside --out" in err and not out.exists()
    err = prepare_fails(["--folder", folder, "--reports", reports, "--out", out, "--pseudonym-key-file",
                         tmp_path / "key.csv"], capsys)  # fmt: skip
    assert "--pseudonym-key-file needs --pseudonymize" in err


# ---------------------------------------------------------------------------------------------
# The whole route on the hospital's own export: prepare -> finetune -> evaluate -> export -> Space
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom_demo_model(tiny_finetune_model, tiny_phantom, tmp_path_factory) -> Path:
    """A released-style demo model: the tiny stage-2 model, its training-image statistics fitted on the
    phantom, saying it was fine-tuned on the phantom (as `trrg demo` writes it)."""
    import copy

    from trrg.assembly.hub_folders import save_hub_folder
    from trrg.trainers.training_distribution import fit_training_distribution

    model, processor = copy.deepcopy(tiny_finetune_model[0]), tiny_finetune_model[1]
    studies = load_studies(tiny_phantom)
    assert fit_training_distribution(model, processor, studies["train"], studies["val"])["fit_studies"] > 0
    model.config.trrg_training_data = "phantom"
    return save_hub_folder(model, processor, tmp_path_factory.mktemp("demo") / "model")


@pytest.mark.slow
def test_the_hospital_export_goes_prepare_finetune_evaluate_export_and_into_the_space(export, phantom_demo_model,
                                                                                     tmp_path, capsys):
    from safetensors.torch import load_file

    from space_helpers import space_report

    from trrg.space import loading, ui

    root, folder, reports = export
    keys, data = tmp_path / "site-only" / "keys.csv", tmp_path / "hospital"

    # 1. prepare: every study found is kept or dropped; the kept ones are the splits' rows
    printed = prepare(options(folder, reports, data, "--pseudonym-key-file", keys), capsys)
    summary = json.loads((data / "prepare.json").read_text())
    kept, dropped = sum(summary["kept"].values()), sum(summary["dropped"].values())
    assert kept + dropped == summary["found"] == 11 and f"studies found 11 = kept {kept} + dropped {dropped}" in printed
    audit = [json.loads(line) for line in (data / "prepare_audit.jsonl").read_text().splitlines()]
    dropped_ids = {line["study"] for line in audit if line["outcome"] == "dropped study"}
    assert len(dropped_ids) == dropped
    studies = load_studies(data)
    split_ids = {name: [row["id"] for row in split] for name, split in studies.items()}
    assert {name: len(ids) for name, ids in split_ids.items()} == summary["kept"] and "val" in studies
    assert not dropped_ids & {study for ids in split_ids.values() for study in ids}
    name = summary["name"]

    # 2. finetune, continuing the demo model (1 epoch); the val split is evaluated during training
    run = tmp_path / "run"
    assert main(["finetune", "--model", str(phantom_demo_model), "--data", str(data), "--output_dir", str(run),
                 "--num_train_epochs", "1", "--warmup_steps", "0", "--per_device_train_batch_size", "4",  # no lr-0 step
                 "--use_cpu", "True", "--generation_max_new_tokens", "4", "--disable_tqdm", "True"]) == 0
    capsys.readouterr()
    final = run / "final"
    config = json.loads((final / "config.json").read_text())
    assert config["trrg_training_data"] == name != "phantom"  # the prepared set's name, never a path
    assert str(tmp_path) not in (final / "config.json").read_text()
    history = json.loads((run / "log_history.json").read_text())
    generated = [entry for entry in history if "eval_ce_macro_f1_14" in entry]  # reports generated for val, scored
    assert [entry["eval_n"] for entry in generated] == [len(studies["val"])] and any("eval_loss" in e for e in history)
    steps = -(-summary["kept"]["train"] // 4)  # one epoch at batch 4
    assert [entry["step"] for entry in history if "loss" in entry][-1] == steps == history[-1]["step"]
    before, after = load_file(phantom_demo_model / "model.safetensors"), load_file(final / "model.safetensors")
    assert any(not torch.equal(before[key], after[key]) for key in before if key in after)  # it trained

    # 3. evaluate on the prepared test split: CE metrics and the out-of-distribution rate, per test study
    scored = tmp_path / "eval"
    assert main(["evaluate", "--model", str(final), "--data", str(data), "--split", "test", "--out", str(scored),
                 "--max_new_tokens", "4", "--no_meteor"]) == 0
    capsys.readouterr()
    metrics = json.loads((scored / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (scored / "predictions.jsonl").read_text().splitlines()]
    assert metrics["n"] == len(predictions) == len(studies["test"]) == summary["kept"]["test"] > 0
    assert sorted(p["id"] for p in predictions) == sorted(split_ids["test"]) and metrics["skipped_studies"] == 0
    assert {"ce_micro_f1_14", "ce_macro_f1_14", "ce_macro_f1_5"} <= metrics.keys()
    assert 0.0 <= metrics["ce_macro_f1_14"] <= 1.0
    flagged = sum(p["familiarity"] > 1.0 for p in predictions)  # every prediction carries its familiarity
    assert metrics["out_of_distribution_count"] == flagged
    assert metrics["out_of_distribution_rate"] == pytest.approx(flagged / len(predictions))

    # 4. export: the hub folder, with the run's metrics in its README
    hub = tmp_path / "hub"
    metrics_file = scored / "metrics.json"
    assert main(["export", "--checkpoint", str(final), "--out", str(hub), "--metrics", str(metrics_file)]) == 0
    capsys.readouterr()
    assert json.loads((hub / "config.json").read_text())["trrg_training_data"] == name
    card = (hub / "README.md").read_text()
    assert f"| ce_macro_f1_14 | {metrics['ce_macro_f1_14']:.4f} |" in card and f"| n | {metrics['n']} |" in card
    assert metrics["data"] == name and f"| data | {name} |" in card and str(data) not in card  # named, not a path
    assert str(final) not in card and str(tmp_path) not in card  # nor where the checkpoint lay

    # 5. the Space served from the exported folder (its remote code): an extension-less DICOM of the export
    model, processor = loading.load_model(str(hub))
    is_phantom = loading.training_data_of(model.config)
    banner = ui.build_demo(model, processor, is_phantom).blocks
    [banner] = [block.value for block in banner.values() if getattr(block, "elem_id", None) == "banner"]
    assert is_phantom is False and name in banner and "phantom" not in banner.lower()
    [upload] = [path for path in study_folder(folder, "ACC1002", "7000001", "20240402").rglob("IM*")]
    assert upload.suffix == "" and upload.read_bytes()[128:132] == b"DICM"  # told by its content, not its name
    source = pixels_12bit(11).astype(np.float64)  # ACC1002: the second study, series 1, no window
    view = np.asarray(loading.load_view(str(upload), processor))
    assert np.abs(view.astype(int) - rescale_to_uint8(source, source.min(), source.max())).max() <= 1
    perception, report = space_report(model, processor, upload, tokens=8)
    inputs = processor(images=[[loading.load_view(str(upload), processor)]], return_tensors="pt")
    with torch.no_grad():
        expected = model.predict_diseases(inputs["pixel_values"], inputs["view_mask"])[0]
    assert torch.allclose(torch.tensor(list(perception.disease_probs.values())), expected, atol=1e-4)
    assert isinstance(report.report, str) and report.report.strip()  # a report came back
    _, beams = space_report(model, processor, upload, beams=2, tokens=4)  # beams repeat the fitted model's statistics
    assert beams.report.strip()
    # the frozen perception keeps the demo model's training-image statistics (a few training studies fit none)
    assert perception.in_distribution is not None
