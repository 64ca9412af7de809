"""Study loaders (R2Gen, imagefolder, JSONL, in-memory datasets), the collator's image reader and
up-front validation."""

from __future__ import annotations

import json
import logging

import datasets
import numpy as np
import pytest
from PIL import Image

from trrg.modeling.configuration_trrg import CHEXPERT_OBSERVATIONS
from trrg.modeling.image_processing_trrg import XRayImageError
from trrg.processing.studies import (
    StudyDataError,
    StudyImageReader,
    load_records,
    load_r2gen,
    validate_studies,
)

REPORT = "The heart is enlarged. There is no pleural effusion."


def save_png(path, value: int = 128, size: tuple[int, int] = (16, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)
    return path


def write_r2gen(root, entries_by_split: dict, make_images: bool = True):
    for entries in entries_by_split.values():
        for entry in entries:
            for relative in entry["image_path"] if make_images else []:
                save_png(root / "images" / relative)
    path = root / "annotation.json"
    path.write_text(json.dumps(entries_by_split))
    return path


def entry(study_id: str, views: int = 2, **extra) -> dict:
    return {"id": study_id, "report": REPORT, "image_path": [f"{study_id}/{v}.png" for v in range(views)], **extra}


# --- R2Gen ---------------------------------------------------------------------------------


def test_r2gen_string_labels_and_schema(tmp_path):
    chexbert = {name: "" for name in CHEXPERT_OBSERVATIONS} | {"Cardiomegaly": "1.0", "Pleural Effusion": "0.0",
                                                                 "Edema": "-1.0"}  # fmt: skip
    path = write_r2gen(tmp_path, {"train": [entry("s1", labels=chexbert)], "val": [entry("s2", views=1, labels=chexbert)]})
    studies = load_r2gen(path)
    assert list(studies) == ["train", "val"]
    row = studies["train"][0]
    assert row["id"] == "s1" and row["split"] == "train" and row["report"] == REPORT
    assert row["images"] == [str((tmp_path / "images" / "s1" / f"{v}.png").absolute()) for v in range(2)]
    assert row["labels"]["Cardiomegaly"] == 1 and row["labels"]["Pleural Effusion"] == 0
    assert row["labels"]["Edema"] == -1 and row["labels"]["Fracture"] is None
    assert set(row["labels"]) == set(CHEXPERT_OBSERVATIONS)
    assert len(studies["val"][0]["images"]) == 1


def test_r2gen_int_labels_list_form_and_split_selection(tmp_path):
    labels = [None] * len(CHEXPERT_OBSERVATIONS)
    labels[CHEXPERT_OBSERVATIONS.index("Pneumothorax")] = 1
    path = write_r2gen(tmp_path, {"train": [entry("a", labels=labels)], "test": [entry("b", labels={"No Finding": 1})]})
    studies = load_r2gen(path, splits=["test", "train"])
    assert studies["train"][0]["labels"]["Pneumothorax"] == 1
    assert studies["test"][0]["labels"]["No Finding"] == 1 and studies["test"][0]["labels"]["Edema"] is None
    with pytest.raises(StudyDataError, match=r"no split named \['validation'\]"):
        load_r2gen(path, splits=["validation"])


def test_an_empty_split_loads_as_zero_studies_with_the_schema(tmp_path):
    path = write_r2gen(tmp_path, {"train": [entry("s1")], "val": [], "test": []})
    studies = load_r2gen(path)
    assert studies["val"].num_rows == 0 and studies["test"].num_rows == 0
    assert studies["val"].features == studies["train"].features


def test_r2gen_bad_label_names_the_study(tmp_path):
    path = write_r2gen(tmp_path, {"train": [entry("bad", labels={"Cardiomegaly": "yes"})]})
    with pytest.raises(StudyDataError, match=r"study 'bad', label 'Cardiomegaly'"):
        load_r2gen(path)


def test_r2gen_labeler_fallback(tmp_path):
    path = write_r2gen(tmp_path, {"train": [entry("nolabels")]})
    labels = load_r2gen(path)["train"][0]["labels"]
    assert labels["Cardiomegaly"] == 1 and labels["Pleural Effusion"] == 0
    forced = write_r2gen(tmp_path, {"train": [entry("x", labels={"Fracture": 1})]})
    assert load_r2gen(forced, labels="labeler")["train"][0]["labels"]["Fracture"] is None  # report wins


def test_r2gen_missing_image_names_id_and_path(tmp_path):
    path = write_r2gen(tmp_path, {"train": [entry("ok"), entry("gone")]})
    (tmp_path / "images" / "gone" / "1.png").unlink()
    with pytest.raises(StudyDataError, match=r"study 'gone': .*gone[/\\]1\.png"):
        load_r2gen(path)
    kept = load_r2gen(path, on_missing="skip")
    assert kept["train"]["id"] == ["ok"]
    assert load_r2gen(path, check_images=False)["train"].num_rows == 2


def test_r2gen_custom_image_root(tmp_path):
    path = write_r2gen(tmp_path, {"train": [entry("s1")]})
    (tmp_path / "images").rename(tmp_path / "files")
    assert load_r2gen(path, image_root=tmp_path / "files")["train"][0]["images"][0].endswith("s1/0.png")


# --- Hugging Face sources ------------------------------------------------------------------


def test_imagefolder_one_image_per_row_grouped_by_study(tmp_path):
    folder = tmp_path / "folder"
    for name in ("a_front.png", "a_side.png", "b_front.png"):
        save_png(folder / name)
    rows = [
        {"file_name": "a_front.png", "study_id": "a", "report": REPORT},
        {"file_name": "a_side.png", "study_id": "a", "report": REPORT},
        {"file_name": "b_front.png", "study_id": "b", "report": "Normal chest."},
    ]
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    studies = load_records(folder, study_column="study_id", cache_dir=tmp_path / "cache")["train"]
    assert studies["id"] == ["a", "b"]
    assert [len(images) for images in studies["images"]] == [2, 1]
    assert studies[0]["images"][0] == str((folder / "a_front.png").absolute())
    assert studies[0]["labels"]["Cardiomegaly"] == 1  # labelled from the report


def test_imagefolder_with_split_folders_missing_image_names_where_it_was_looked_for(tmp_path):
    folder = tmp_path / "folder"
    for split in ("train", "test"):
        save_png(folder / split / "1.png")
        rows = [{"file_name": "1.png", "id": f"{split}-ok", "report": REPORT},
                {"file_name": "gone.png", "id": f"{split}-gone", "report": REPORT}]
        (folder / split / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(StudyDataError) as error:
        load_records(folder, cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert str(folder / "train" / "gone.png") in message  # the path datasets resolved, in the split's folder
    assert "the folder of the metadata file that lists them" in message
    assert f"resolved against {folder.absolute()}." not in message  # not the root, where nothing was looked for


def test_jsonl_with_relative_paths_and_label_column(tmp_path):
    save_png(tmp_path / "img" / "1.png")
    save_png(tmp_path / "img" / "2.png")
    record = {"id": "s1", "images": ["img/1.png", "img/2.png"], "report": REPORT, "labels": {"Edema": 1}}
    path = tmp_path / "studies.jsonl"
    path.write_text(json.dumps(record) + "\n")
    studies = load_records(path, cache_dir=tmp_path / "cache")["train"]
    assert studies[0]["images"] == [str((tmp_path / "img" / f"{i}.png").absolute()) for i in (1, 2)]
    assert studies[0]["labels"]["Edema"] == 1 and studies[0]["labels"]["Cardiomegaly"] is None
    record["images"] = ["img/missing.png"]
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(StudyDataError, match=r"study 's1': .*missing\.png"):
        load_records(path, cache_dir=tmp_path / "cache2")


def test_a_split_column_is_honoured_never_rewritten(tmp_path):
    """A JSONL of every study with a `split` column: test studies stay test studies (datasets loads
    a single file as one "train" split); a row without a split, or a column that contradicts the
    split a DatasetDict puts the row in, is an error."""
    save_png(tmp_path / "img" / "1.png")
    rows = [{"id": f"s{i}", "images": ["img/1.png"], "report": REPORT, "split": split}
            for i, split in enumerate(["train", "test", "train", "val"])]
    path = tmp_path / "studies.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    studies = load_records(path, cache_dir=tmp_path / "cache")
    assert {name: studies[name]["id"] for name in studies} == {"test": ["s1"], "train": ["s0", "s2"], "val": ["s3"]}
    assert studies["test"][0]["split"] == "test"
    assert list(load_records(path, splits=["test"], cache_dir=tmp_path / "cache")) == ["test"]
    rows[2]["split"] = ""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(StudyDataError, match="no value in its 'split' column"):
        load_records(path, cache_dir=tmp_path / "cache3")
    table = {"image": ["img/1.png"], "report": [REPORT], "split": ["test"]}
    contradicting = datasets.DatasetDict({"train": datasets.Dataset.from_dict(table),
                                          "test": datasets.Dataset.from_dict(table)})
    with pytest.raises(StudyDataError, match="split 'train' holds rows whose 'split' column says"):
        load_records(contradicting, image_root=tmp_path)


def test_in_memory_dataset_with_image_feature(tmp_path):
    image = Image.fromarray(np.full((12, 12), 200, np.uint8))
    dataset = datasets.Dataset.from_dict(
        {"image": [image, image], "report": [REPORT, "No acute disease."]},
        features=datasets.Features({"image": datasets.Image(), "report": datasets.Value("string")}),
    )
    studies = load_records(dataset, splits="validation")
    assert list(studies) == ["validation"]
    row = studies["validation"][0]
    assert row["id"] == "validation-0" and row["split"] == "validation"
    assert isinstance(row["images"][0], dict) and row["images"][0]["bytes"]  # kept in memory, nothing on disk
    assert not list(tmp_path.iterdir())
    views = StudyImageReader().read(row)
    assert np.asarray(views[0]).mean() == 200


# --- StudyImageReader ----------------------------------------------------------------------


def test_reader_skips_corrupt_images_and_counts(tmp_path, caplog):
    good = save_png(tmp_path / "good.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    reader = StudyImageReader()
    with caplog.at_level(logging.WARNING):
        kept, views = reader.read_batch(
            [{"id": "s1", "images": [str(good), str(corrupt)]}, {"id": "s2", "images": [str(corrupt)]}]
        )
    assert [study["id"] for study in kept] == ["s1"] and len(views[0]) == 1
    assert reader.skipped_images == 2 and reader.dropped_studies == 1
    assert "s1" in caplog.text and "corrupt.png" in caplog.text and "dropped" in caplog.text
    with pytest.raises(XRayImageError, match=r"study 's1': .*corrupt\.png"):
        StudyImageReader(strict=True).read({"id": "s1", "images": [str(good), str(corrupt)]})


def test_reader_puts_dicom_views_frontal_first_as_the_processor_does(tmp_path):
    from test_image_processing import ramp, write_dicom

    lateral = write_dicom(tmp_path / "IM1", ramp(30, 40, np.uint16, 4095), SeriesDescription="CHEST LAT")
    frontal = write_dicom(tmp_path / "IM2", ramp(40, 30, np.uint16, 4095), ViewPosition="PA")
    views = StudyImageReader().read({"id": "s1", "images": [str(lateral), str(frontal)]})
    assert [view.size for view in views] == [(30, 40), (40, 30)]  # (width, height): the PA first


# --- validate_studies ----------------------------------------------------------------------


def test_validate_studies_finds_empty_report_missing_images_and_duplicates(tmp_path):
    rows = [
        {"id": "ok", "images": ["/x/1.png"], "report": REPORT},
        {"id": "blank", "images": ["/x/2.png"], "report": " ... "},
        {"id": "noimg", "images": [], "report": REPORT},
    ]
    studies = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list([rows[0]])}
    )
    problems = validate_studies(studies)
    assert len(problems) == 3, problems
    assert "split 'train', row 1 (id 'blank'): report is empty" in problems[0]
    assert "split 'train', row 2 (id 'noimg'): has no images" in problems[1]
    assert "split 'test', row 0 (id 'ok'): duplicate id, first seen at split 'train', row 0" in problems[2]
    assert validate_studies(studies["train"].select([0])) == []


# --- Provenance: the name load_studies gives what it loaded ----------------------------------


def test_load_studies_names_what_it_loaded_never_by_its_path(tmp_path):
    import re

    from trrg.processing.studies import load_studies

    folder = tmp_path / "st_marys_radiology"  # a folder name that names a hospital
    path = write_r2gen(folder, {"train": [entry("s1"), entry("s2")], "val": [entry("s3", views=1)]})
    studies = load_studies(path)
    name = studies["train"].info.dataset_name
    assert re.fullmatch(r"r2gen data set [0-9a-f]{8}", name) and studies["val"].info.dataset_name == name
    assert load_studies(folder)["train"].info.dataset_name == name  # the same studies, the same name
    # a trainer truncates, filters and saves: the name goes along (datasets' own DatasetInfo field)
    assert studies["train"].select([0]).info.dataset_name == name
    assert studies["train"].filter(lambda row: row["id"] == "s1").info.dataset_name == name
    studies.save_to_disk(str(tmp_path / "saved"))
    assert datasets.load_from_disk(str(tmp_path / "saved"))["val"].info.dataset_name == name
    assert load_studies(tmp_path / "saved")["train"].info.dataset_name == name  # a saved folder keeps its name
    assert load_studies(tmp_path / "saved", splits=["val"])["val"].info.dataset_name == name

    other = write_r2gen(tmp_path / "other", {"train": [entry("s1", report="No acute disease."), entry("s2")],
                                             "val": [entry("s3", views=1)]})  # fmt: skip
    assert load_studies(other)["train"].info.dataset_name not in (name, None)  # another report, another name

    # an in-memory Dataset that datasets named after its folder (load_dataset does) gets a name of its content
    rows = [{"images": [str(folder / "images" / "s1" / "0.png")], "report": REPORT}]
    named = datasets.Dataset.from_list(rows, info=datasets.DatasetInfo(dataset_name="st_marys_radiology"))
    loaded = load_studies(named)["train"].info.dataset_name
    assert re.fullmatch(r"records data set [0-9a-f]{8}", loaded) and "marys" not in loaded

    (folder / "phantom_meta.json").write_text("{}")
    assert {split.info.dataset_name for split in load_studies(folder).values()} == {"phantom"}
