"""The CXR phantom: determinism, output format, labels agree with the labeler, findings are drawn."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trrg.modeling.configuration_trrg import CHEXPERT_OBSERVATIONS
from trrg.commands.phantom import main
from trrg.processing.phantom import generate_phantom, sample_study

SMALL = {"num_train": 3, "num_val": 1, "num_test": 2, "image_size": 32}
POSITIVE = "positive"


@pytest.fixture(scope="module")
def studies() -> list[tuple[str, dict]]:
    """(report, labels) of 400 studies; images kept tiny and frontal-only to stay fast."""
    return [sample_study((11, index), 32, lateral=False)[1:3] for index in range(400)]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_sample_study_is_deterministic_and_seed_dependent():
    first, second, other = (sample_study(seed, 48) for seed in ((3, 5), (3, 5), (3, 6)))
    assert first[1:] == second[1:]
    assert all(np.array_equal(a, b) for a, b in zip(first[0], second[0], strict=True))
    assert not np.array_equal(first[0][0], other[0][0])
    assert [image.shape for image in first[0]] == [(48, 48), (48, 48)]
    assert all(image.dtype == np.uint8 for image in first[0])


def test_generate_phantom_is_byte_identical_for_the_same_seed(tmp_path):
    first = generate_phantom(tmp_path / "a", seed=4, **SMALL)
    second = generate_phantom(tmp_path / "b", seed=4, **SMALL)
    third = generate_phantom(tmp_path / "c", seed=5, **SMALL)
    assert _files(first.parent) == _files(second.parent)
    assert first.read_bytes() != third.read_bytes()


def test_annotation_schema_and_images(tmp_path):
    path = generate_phantom(tmp_path / "phantom", seed=0, **SMALL)
    annotation = json.loads(path.read_text())
    assert {split: len(entries) for split, entries in annotation.items()} == {"train": 3, "val": 1, "test": 2}
    ids = [entry["id"] for entries in annotation.values() for entry in entries]
    assert len(set(ids)) == len(ids)
    for split, entries in annotation.items():
        for entry in entries:
            assert set(entry) == {"id", "report", "image_path", "split", "labels"}
            assert entry["split"] == split and entry["report"].endswith(".")
            assert list(entry["labels"]) == list(CHEXPERT_OBSERVATIONS)
            assert set(entry["labels"].values()) <= {1, 0, -1, None}
            assert entry["image_path"] == [f"{entry['id']}/0.png", f"{entry['id']}/1.png"]
            for relative in entry["image_path"]:
                with Image.open(path.parent / "images" / relative) as image:
                    assert (image.mode, image.size) == ("L", (32, 32))
    meta = json.loads((path.parent / "phantom_meta.json").read_text())
    assert meta["arguments"]["seed"] == 0 and meta["version"]
    assert set(meta["studies"]) == set(ids)
    assert all({"findings", "anatomy"} <= set(study) for study in meta["studies"].values())


def test_lateral_fraction_zero_gives_frontal_only(tmp_path):
    path = generate_phantom(
        tmp_path / "frontal", num_train=4, num_val=0, num_test=0, image_size=32, lateral_fraction=0.0
    )
    entries = json.loads(path.read_text())["train"]
    assert all(len(entry["image_path"]) == 1 for entry in entries)
    assert not list((path.parent / "images").rglob("1.png"))


def test_labeler_reproduces_every_generated_label(studies):
    labeler = pytest.importorskip("trrg.processing.labeler", reason="trrg.processing.labeler is not written yet")
    mismatches = [
        (report, name, expected[name], got.get(name))
        for report, expected in studies
        for got in [labeler.label_report(report)]
        for name in CHEXPERT_OBSERVATIONS
        if got.get(name) != expected[name]
    ]
    assert not mismatches, f"{len(mismatches)} labels differ, e.g. {mismatches[:3]}"


def test_prevalence_is_imbalanced_like_real_data(studies):
    labels = [labels for _, labels in studies]

    def share(name: str, values=(1,)) -> float:
        return sum(study[name] in values for study in labels) / len(labels)

    assert 0.35 < share("No Finding") < 0.65
    for common in ("Cardiomegaly", "Pleural Effusion", "Support Devices"):
        assert 0.06 < share(common) < 0.25, common
    for rare in ("Pneumothorax", "Fracture", "Lung Lesion", "Pleural Other", "Enlarged Cardiomediastinum"):
        assert 0.002 < share(rare, (1, -1)) < 0.09, rare
    assert 0.01 < sum(-1 in study.values() for study in labels) / len(labels) < 0.15  # hedged findings
    co_occurring = Counter(sum(study[name] == 1 for name in CHEXPERT_OBSERVATIONS[1:-1]) for study in labels)
    assert sum(count for findings, count in co_occurring.items() if findings >= 2) > 0.05 * len(labels)
    negated = sum(value == 0 for study in labels for value in study.values())
    positive = sum(value == 1 for study in labels for name, value in study.items() if name != "No Finding")
    assert negated > 2 * positive  # reports are dominated by negated statements


def _difference(findings: dict, size: int = 64) -> np.ndarray:
    """Frontal image with ``findings`` minus the same study (anatomy, noise) without them."""
    with_finding = sample_study(21, size, lateral=False, findings=findings)[0][0].astype(float)
    without = sample_study(21, size, lateral=False, findings={})[0][0].astype(float)
    return with_finding - without


def test_right_effusion_brightens_the_image_left_lower_zone():
    diff = _difference({"pleural_effusion": {"side": "right", "size": "moderate", "certainty": POSITIVE}})
    size = diff.shape[0]
    right_base = diff[size // 2 :, : size // 2]  # the patient's right is on the image's left
    assert right_base.mean() > 3.0
    assert np.abs(diff[: size // 3]).max() == 0  # the upper third is untouched
    assert np.abs(diff[:, size // 2 + 4 :]).mean() < 0.2 * right_base.mean()  # the left side barely changes


LATERALIZED = {
    "pleural_effusion": {"size": "small"},
    "pneumothorax": {"size": "small"},
    "airspace": {"kind": "consolidation", "zone": "middle", "air_bronchograms": True, "seed": 1},
    "atelectasis": {},
    "lung_lesion": {"kind": "nodule", "size_mm": 6, "zone": "upper", "position": 0.5},
    "fracture": {"rib": 6, "position": 0.6},
    "pleural_thickening": {},
}


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("name", sorted(LATERALIZED))
def test_findings_are_drawn_on_the_reported_side(name, side):
    change = np.abs(_difference({name: LATERALIZED[name] | {"side": side, "certainty": POSITIVE}}))
    half = change.shape[1] // 2
    image_left, image_right = change[:, :half].sum(), change[:, half:].sum()
    reported, other = (image_left, image_right) if side == "right" else (image_right, image_left)
    assert change.max() >= 10  # visible, even for a 6 mm nodule
    assert reported > 10 * other


def test_a_fracture_is_a_bright_spot_at_the_demos_resolution_on_both_views():
    """Phantom 1.3: besides its gap and 1-px step (which look like the space between two ribs, so no
    classifier found them at 128 px; docs/decidability), a fracture draws the dense spot of the
    overlapping fragment ends: a few pixels clearly brighter than the same rib unbroken."""
    fracture = {"fracture": {"side": "right", "rib": 6, "position": 0.6, "certainty": POSITIVE}}
    broken, whole = sample_study(21, 128, findings=fracture)[0], sample_study(21, 128, findings={})[0]
    for view in (0, 1):
        change = broken[view].astype(int) - whole[view].astype(int)
        assert (change >= 20).sum() >= 9, view  # about a 4-px spot, 20+ grey levels brighter
        rows, columns = np.nonzero(change >= 20)
        assert np.ptp(rows) <= 8 and np.ptp(columns) <= 8, view  # one spot, not a lung


def test_cardiomegaly_and_devices_change_the_image_visibly():
    heart = _difference({"cardiomegaly": {"ctr": 0.64, "severity": "severe", "certainty": POSITIVE}})
    assert heart[heart.shape[0] // 2 :].mean() > 3.0  # the larger heart is brighter than lung
    devices = _difference({"support_devices": {"devices": ["pacemaker"], "certainty": POSITIVE}})
    assert devices.max() > 60


def test_sample_study_report_matches_the_given_findings():
    _, report, labels, attributes = sample_study(
        2, 32, findings={"pneumothorax": {"side": "left", "size": "large", "certainty": POSITIVE}}
    )
    assert "left" in report and "pneumothorax" in report.lower()
    assert labels["Pneumothorax"] == 1 and labels["No Finding"] is None
    assert attributes["findings"]["pneumothorax"]["side"] == "left"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_train": -1}, "num_train"),
        ({"num_test": 1.5}, "num_test"),
        ({"image_size": 16}, "image_size"),
        ({"lateral_fraction": 1.5}, "lateral_fraction"),
        ({"num_workers": 0}, "num_workers"),
        ({"num_train": 0, "num_val": 0, "num_test": 0}, "at least one study"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        generate_phantom(tmp_path / "out", **(SMALL | arguments))
    with pytest.raises(ValueError, match="image_size"):
        sample_study(0, 31)
    with pytest.raises(ValueError, match="effusion"):
        sample_study(0, 32, findings={"effusion": {}})


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine.*--overwrite"):
        generate_phantom(foreign, **SMALL)
    assert (foreign / "notes.txt").read_text() == "keep me"
    generate_phantom(foreign, overwrite=True, **SMALL)
    generate_phantom(foreign, **SMALL)  # an earlier phantom output may be regenerated
    assert (foreign / "annotation.json").is_file()


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--num-train", "2", "--num-val", "0", "--num-test", "1", "--image-size", "32"]) == 0
    assert len(json.loads((out / "annotation.json").read_text())["test"]) == 1
    assert main(["--out", str(tmp_path / "bad"), "--image-size", "8"]) == 2
    assert "image_size" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0


# --------------------------------------------------------------------------------------------
# Airspace disease: the written label follows the kind that is drawn
# --------------------------------------------------------------------------------------------
AIRSPACE_LABELS_BY_KIND = {  # (Lung Opacity, Consolidation, Pneumonia)
    "ground_glass": (1, None, None),
    "consolidation": (None, 1, None),
    "multifocal": (None, 1, 1),
}


def test_airspace_labels_are_a_function_of_the_drawn_kind():
    """However a report words it, an airspace finding's labels follow from its stored kind alone,
    so they are decidable from the pixels (which draw the kinds differently, see below)."""
    from trrg.processing.phantom_reports import sample_findings, write_report

    labeler = pytest.importorskip("trrg.processing.labeler", reason="trrg.processing.labeler is not written yet")
    seen: dict[str, set] = {kind: set() for kind in AIRSPACE_LABELS_BY_KIND}
    for index in range(3000):  # what sample_study does, without drawing the images (~300 airspace studies)
        findings = sample_findings(np.random.default_rng([13, index]))
        if "airspace" not in findings:
            continue
        report, labels = write_report(np.random.default_rng([14, index]), findings)
        seen[findings["airspace"]["kind"]].add((labels["Lung Opacity"], labels["Consolidation"], labels["Pneumonia"]))
        assert labeler.label_report(report) == labels, report
    assert {kind: sorted(found, key=str) for kind, found in seen.items()} == {
        kind: [labels] for kind, labels in AIRSPACE_LABELS_BY_KIND.items()
    }
    # The kind is what sample_study (and so phantom_meta.json) records next to the report.
    for kind, found in _airspace_examples(1).items():
        _, _, labels, attributes = sample_study(5, 32, lateral=False, findings={"airspace": found[0]})
        assert attributes["findings"]["airspace"]["kind"] == kind
        assert (labels["Lung Opacity"], labels["Consolidation"], labels["Pneumonia"]) == AIRSPACE_LABELS_BY_KIND[kind]


def _airspace_examples(per_kind: int) -> dict[str, list[dict]]:
    """``per_kind`` airspace findings of each kind, as the generator draws them."""
    from trrg.processing.phantom_reports import sample_findings

    found: dict[str, list[dict]] = {kind: [] for kind in AIRSPACE_LABELS_BY_KIND}
    index = 0
    while min(map(len, found.values())) < per_kind:
        airspace = sample_findings(np.random.default_rng([31, index])).get("airspace")
        index += 1
        if airspace is not None and len(found[airspace["kind"]]) < per_kind:
            found[airspace["kind"]].append(airspace)
    return found


def _airspace_features(change: np.ndarray) -> np.ndarray:
    """Hand features of (image with the finding - same anatomy without it): how dense (peak), how
    flat-topped (share of the changed area near the peak), how patchy (coefficient of variation
    inside) and how sharply marginated (mean gradient relative to the peak)."""
    peak = np.percentile(change, 99.5)
    if peak < 4:
        return np.zeros(4)
    changed = change > 0.3 * peak
    inside = change[changed]
    gradient_y, gradient_x = np.gradient(change)
    return np.array(
        [
            peak / 100,
            (change > 0.7 * peak).sum() / changed.sum(),
            inside.std() / inside.mean(),
            np.hypot(gradient_x, gradient_y)[changed].mean() / peak,
        ]
    )


def _nearest_centroid_accuracy(features: np.ndarray, classes: np.ndarray) -> float:
    """Leave-one-out accuracy of a nearest-centroid classifier on standardised features."""
    scaled = (features - features.mean(0)) / (features.std(0) + 1e-9)
    names = sorted(set(classes))
    correct = 0
    for held_out in range(len(scaled)):
        rest = np.arange(len(scaled)) != held_out
        centroids = np.array([scaled[rest & (classes == name)].mean(0) for name in names])
        predicted = names[int(np.argmin(((centroids - scaled[held_out]) ** 2).sum(1)))]
        correct += predicted == classes[held_out]
    return correct / len(scaled)


def test_airspace_kinds_are_separable_from_the_pixels():
    """30 studies per kind at 128 px, each against a normal control with the same anatomy and noise:
    four simple image statistics tell ground glass, lobar consolidation, multifocal pneumonia and
    normal apart, on the frontal view and (less sharply, both lungs overlap there) the lateral."""
    per_kind = 30
    examples = _airspace_examples(per_kind)
    features: dict[int, list[np.ndarray]] = {0: [], 1: []}
    classes = []
    for index in range(per_kind):
        controls = [image.astype(float) for image in sample_study((41, index), 128, findings={})[0]]
        for view, control in enumerate(controls):
            features[view].append(_airspace_features(control - control))
        classes.append("normal")
        for kind, found in examples.items():
            images = sample_study((41, index), 128, findings={"airspace": found[index]})[0]
            for view, (image, control) in enumerate(zip(images, controls, strict=True)):
                features[view].append(_airspace_features(image.astype(float) - control))
            classes.append(kind)
    classes = np.array(classes)
    frontal = _nearest_centroid_accuracy(np.array(features[0]), classes)
    lateral = _nearest_centroid_accuracy(np.array(features[1]), classes)
    diseased = classes != "normal"  # the three kinds among themselves, without the easy normals
    frontal_kinds = _nearest_centroid_accuracy(np.array(features[0])[diseased], classes[diseased])
    assert frontal >= 0.9 and frontal_kinds >= 0.9, (frontal, frontal_kinds)
    assert lateral >= 0.85, lateral


# --------------------------------------------------------------------------------------------
# Finding regions (phantom_meta.json "regions"; finding_regions) for scoring localisation
# --------------------------------------------------------------------------------------------
def _abnormal_findings(count: int, seed: int = 77) -> list[dict]:
    """The first ``count`` non-empty finding sets the generator draws."""
    from trrg.processing.phantom_reports import sample_findings

    found, index = [], 0
    while len(found) < count:
        findings = sample_findings(np.random.default_rng([seed, index]))
        index += 1
        if findings:
            found.append(findings)
    return found


def _inside(boxes: list[list[int]], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def test_every_drawn_finding_has_a_region_in_both_views_inside_the_image():
    from trrg.processing.phantom import finding_observations

    size = 64
    for index, findings in enumerate(_abnormal_findings(80)):
        _, _, labels, attributes = sample_study((9, index), size, findings=findings)
        regions = attributes["regions"]
        assert set(regions) == {"0", "1"}
        for view, found in regions.items():
            expected = {obs for name, attrs in findings.items() for obs in finding_observations(name, attrs)}
            assert set(found) == expected, (view, findings)
            assert all(labels[observation] in (1, -1) for observation in found)  # what the report states
            for boxes in found.values():
                for box in boxes:
                    assert all(isinstance(value, int) for value in box)
                    x0, y0, x1, y1 = box
                    assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size, box
    assert sample_study(7, 32, findings={})[3]["regions"] == {"0": {}, "1": {}}


def test_regions_contain_the_pixels_each_finding_changes():
    """Render each finding of sampled studies (with their other findings) and the same study
    without it: the pixels it changes by 3+ grey levels lie in its boxes, and every box holds some."""
    from trrg.processing.phantom import finding_observations

    size, checked = 64, 0
    for index, findings in enumerate(_abnormal_findings(40, seed=78)):
        images, _, _, attributes = sample_study((8, index), size, findings=findings)
        for name in findings:
            others = {key: value for key, value in findings.items() if key != name}
            without = sample_study((8, index), size, findings=others)[0]
            observation = finding_observations(name, findings[name])[0]
            for view, (image, control) in enumerate(zip(images, without, strict=True)):
                change = np.abs(image.astype(int) - control.astype(int))
                boxes = attributes["regions"][str(view)][observation]
                changed = change >= 3
                assert not changed.any() or _inside(boxes, change.shape)[changed].mean() >= 0.98, (name, view)
                assert all(change[y0:y1, x0:x1].max() >= 1 for x0, y0, x1, y1 in boxes), (name, view, boxes)
                checked += 1
    assert checked > 80


@pytest.mark.parametrize(
    ("findings", "frontal_boxes"),
    [
        ({"pleural_effusion": {"side": "bilateral", "size": "moderate", "certainty": POSITIVE}}, 2),
        ({"atelectasis": {"side": "bilateral", "certainty": POSITIVE}}, 2),
        ({"edema": {"severity": "moderate", "certainty": POSITIVE}}, 2),
        ({"support_devices": {"devices": ["et_tube", "central_line", "pacemaker"], "certainty": POSITIVE}}, 3),
        (
            {
                "airspace": {
                    "kind": "multifocal",
                    "side": "bilateral",
                    "foci": [{"side": "right", "zone": "upper"}, {"side": "left", "zone": "lower"}],
                    "seed": 3,
                    "certainty": POSITIVE,
                }
            },
            2,
        ),
    ],
)
def test_findings_drawn_in_several_places_get_one_box_per_place(findings, frontal_boxes):
    from trrg.processing.phantom import finding_observations

    images, _, _, attributes = sample_study(21, 64, findings=findings)
    name, attrs = next(iter(findings.items()))
    for observation in finding_observations(name, attrs):
        boxes = attributes["regions"]["0"][observation]
        assert len(boxes) == frontal_boxes
        if attrs.get("side") == "bilateral" and name != "airspace":  # one on each half of the image
            assert sorted(box[0] < 32 for box in boxes) == [False, True]
        assert len(attributes["regions"]["1"][observation]) >= 1


LATERAL_GAPS = {
    "pneumothorax": {"side": "left", "size": "small"},
    "fracture": {"side": "right", "rib": 6, "position": 0.6},
    "pleural_thickening": {"side": "left"},
    "et_tube": None,
    "central_line": None,
    "pacemaker": None,
}


@pytest.mark.parametrize("name", sorted(LATERAL_GAPS))
def test_lateral_view_draws_pneumothorax_fracture_devices_and_thickening(name):
    attrs = LATERAL_GAPS[name]
    findings = (
        {"support_devices": {"devices": [name], "certainty": POSITIVE}}
        if attrs is None
        else {name: attrs | {"certainty": POSITIVE}}
    )
    images, _, _, attributes = sample_study(21, 64, findings=findings)
    control = sample_study(21, 64, findings={})[0][1]
    change = np.abs(images[1].astype(int) - control.astype(int))
    assert change.max() >= 5, name
    (observation, boxes), = attributes["regions"]["1"].items()
    assert len(boxes) == 1 and _inside(boxes, change.shape)[change >= 3].all(), (observation, boxes)


def test_regions_are_deterministic_and_written_to_phantom_meta(tmp_path):
    from trrg.processing.phantom import PHANTOM_VERSION, finding_regions

    first, second = (sample_study((4, 2), 48)[3]["regions"] for _ in range(2))
    assert first == second
    path = generate_phantom(tmp_path / "p", seed=2, num_train=6, num_val=0, num_test=0, image_size=48)
    meta = json.loads((path.parent / "phantom_meta.json").read_text())
    assert meta["version"] == PHANTOM_VERSION == "1.3"
    for index, study_id in enumerate(sorted(meta["studies"])):
        stored = meta["studies"][study_id]["regions"]
        assert stored == sample_study((2, index), 48)[3]["regions"]
        by_view = finding_regions(path.parent, study_id)  # the folder, the file or the parsed dict
        from_file = finding_regions(path.parent / "phantom_meta.json", study_id)
        assert by_view == finding_regions(meta, study_id) == from_file
        assert by_view == {int(view): found for view, found in stored.items()}
    with pytest.raises(KeyError, match="phantom_999999"):
        finding_regions(meta, "phantom_999999")
    old = {"version": "1.1", "studies": {"s": {"findings": {}, "anatomy": {}}}}
    with pytest.raises(ValueError, match="1.2"):
        finding_regions(old, "s")


def test_ribs_are_curved_sloping_bands():
    """Posterior ribs leave the spine nearly level and fall ever more steeply to the chest wall
    (about two interspaces); anterior ribs run down and medially from there."""
    from trrg.processing.phantom_render import RIB_SPACING, _rib_field

    heights = np.linspace(-1.0, 1.0, 4001)

    def centre(rib: int, lateral: float, posterior: bool = True) -> float:
        field = _rib_field(np.full_like(heights, lateral), heights, posterior)
        return float(heights[np.argmin(np.abs(field - rib))])

    spine, middle, wall = (centre(5, lateral) for lateral in (0.1, 0.4, 0.72))
    assert wall - spine > 1.5 * RIB_SPACING
    assert 0 < wall - middle and middle - spine < 0.5 * (wall - middle)  # curved, not straight
    assert centre(3, 0.35, posterior=False) > centre(3, 0.7, posterior=False) + RIB_SPACING


def test_the_demo_reuses_only_a_phantom_of_this_version_and_its_arguments(tmp_path):
    from trrg.commands.demo import phantom_is_current

    wanted = {"num_train": 2, "num_val": 1, "num_test": 1, "seed": 3}
    assert not phantom_is_current(tmp_path / "phantom", wanted)
    generate_phantom(tmp_path / "phantom", image_size=32, **wanted)
    assert phantom_is_current(tmp_path / "phantom", wanted)
    assert not phantom_is_current(tmp_path / "phantom", {**wanted, "seed": 4})
    meta_file = tmp_path / "phantom" / "phantom_meta.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "version": "1.1"}))  # drawn by an older trrg
    assert not phantom_is_current(tmp_path / "phantom", wanted)
