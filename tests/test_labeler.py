"""The rule-based CheXpert labeler: mention rules, aggregation, vectors and the `trrg label` CLI."""

import csv
import json

import pytest

from trrg.modeling.configuration_trrg import CHEXPERT_OBSERVATIONS
from trrg.commands.label import main
from trrg.processing.files import write_jsonl_atomically
from trrg.processing.labeler import label_report, label_reports, labels_to_vector

# The CheXpert labeler's own example: sample_reports.csv -> labeled_reports.csv from
# https://github.com/stanfordmlgroup/chexpert-labeler (MIT License, Copyright (c) 2019 Stanford
# Machine Learning Group). Unlisted observations are blank (None) in the reference output.
CHEXPERT_SAMPLES = [
    (
        "Heart size normal and lungs are clear. No edema or pneumonia. No effusion",
        {"No Finding": 1, "Cardiomegaly": 0, "Edema": 0, "Pneumonia": 0, "Pleural Effusion": 0},
    ),
    (
        "1. Left pleural effusion with adjacent atelectasis. Right effusion is also present.\n\n"
        "2. Cardiomegaly without overt edema.",
        {"Cardiomegaly": 1, "Edema": 0, "Atelectasis": 1, "Pleural Effusion": 1},
    ),
    (
        "Minimal patchy airspace disease within the lingula, may reflect atelectasis or consolidation.",
        {"Lung Opacity": 1, "Consolidation": -1, "Atelectasis": -1},
    ),
    ("1. Stable mild cardiomegaly. 2. Hyperexpanded but clear lungs.", {"Cardiomegaly": 1}),
]


def expected(labels: dict) -> dict:
    return {name: labels.get(name) for name in CHEXPERT_OBSERVATIONS}


@pytest.mark.parametrize("report, labels", CHEXPERT_SAMPLES)
def test_reference_samples_match_exactly(report, labels):
    assert label_report(report) == expected(labels)


def labels_of(text: str, *names: str) -> tuple:
    labels = label_report(text)
    return tuple(labels[name] for name in names)


# (sentence, observations, expected labels). The sentences are ours.
RULES = [
    # Negation scope runs across a list ...
    ("No pleural effusion, pneumothorax or consolidation.",
     ("Pleural Effusion", "Pneumothorax", "Consolidation"), (0, 0, 0)),
    ("There is no focal airspace consolidation, pleural effusion, or pneumothorax.",
     ("Consolidation", "Pleural Effusion", "Pneumothorax"), (0, 0, 0)),
    ("Without evidence of edema or effusion.", ("Edema", "Pleural Effusion"), (0, 0)),
    ("Negative for pneumothorax and free of pleural fluid.", ("Pneumothorax", "Pleural Effusion"), (0, 0)),
    # ... and stops at a contrast, a sentence end or a new clause.
    ("No pneumothorax but there is a small left effusion.", ("Pneumothorax", "Pleural Effusion"), (0, 1)),
    ("No consolidation; however, mild atelectasis is present.", ("Consolidation", "Atelectasis"), (0, 1)),
    ("No edema, although cardiomegaly persists.", ("Edema", "Cardiomegaly"), (0, 1)),
    ("No effusion. Mild bibasilar atelectasis.", ("Pleural Effusion", "Atelectasis"), (0, 1)),
    ("No pneumothorax is seen and there is patchy consolidation.", ("Pneumothorax", "Consolidation"), (0, 1)),
    # Negation after the mention.
    ("Pneumothorax is not seen.", ("Pneumothorax",), (0,)),
    ("The previously noted effusion has resolved.", ("Pleural Effusion",), (0,)),
    ("The heart is not enlarged.", ("Cardiomegaly",), (0,)),
    ("Heart size and mediastinal contours are within normal limits.",
     ("Cardiomegaly", "Enlarged Cardiomediastinum"), (0, 0)),
    ("Normal heart size. Unremarkable mediastinum.", ("Cardiomegaly", "Enlarged Cardiomediastinum"), (0, 0)),
    ("Heart size is enlarged, pulmonary vascularity within normal limits.", ("Cardiomegaly",), (1,)),
    # CheXpert negation patterns (patterns/negation.txt of the CheXpert labeler, used as a checklist):
    # "rather than XXX", "history of / disappearance of / drainage of / clearing of XXX", "XXX with
    # interval resolution", "XXX is previously demonstrated".
    ("Basilar atelectasis rather than pneumonia.", ("Atelectasis", "Pneumonia"), (1, 0)),
    ("Scarring instead of consolidation.", ("Consolidation",), (0,)),
    ("History of pneumonia.", ("Pneumonia",), (0,)),
    ("Interval disappearance of the right effusion.", ("Pleural Effusion",), (0,)),
    ("Status post drainage of the left pleural effusion.", ("Pleural Effusion",), (0,)),
    ("Interval clearing of the left basilar consolidation.", ("Consolidation",), (0,)),
    ("Left basilar consolidation with interval resolution.", ("Consolidation",), (0,)),
    ("A right apical pneumothorax was previously demonstrated.", ("Pneumothorax",), (0,)),
    ("The right pneumothorax is no longer seen.", ("Pneumothorax",), (0,)),
    # ... and its pre-negation uncertainty "no evidence to rule out XXX".
    ("There is no evidence to rule out a small pneumothorax.", ("Pneumothorax",), (-1,)),
    # "normal"/"unremarkable" negate the structure they describe (CheXpert binds them to the noun
    # they modify or their subject): across a comma they reach a list of structures, not a finding.
    ("Normal heart size, mild bibasilar atelectasis.", ("Cardiomegaly", "Atelectasis"), (0, 1)),
    ("Heart size within normal limits, small left effusion.", ("Cardiomegaly", "Pleural Effusion"), (0, 1)),
    ("Small right effusion, mediastinum unremarkable.", ("Pleural Effusion", "Enlarged Cardiomediastinum"), (1, 0)),
    ("Normal heart size, mediastinum and hila.", ("Cardiomegaly", "Enlarged Cardiomediastinum"), (0, 0)),
    ("The heart, mediastinum, and hila are normal.", ("Cardiomegaly", "Enlarged Cardiomediastinum"), (0, 0)),
    # Uncertainty cues, before and after the mention.
    ("Findings may represent early pneumonia.", ("Pneumonia",), (-1,)),
    ("Possible small right pleural effusion.", ("Pleural Effusion",), (-1,)),
    ("Opacity suggestive of consolidation.", ("Consolidation", "Lung Opacity"), (-1, 1)),
    ("Left basilar opacity, likely atelectasis.", ("Atelectasis",), (-1,)),
    ("Questionable nodule in the right upper lobe.", ("Lung Lesion",), (-1,)),
    ("Right base atelectasis versus pneumonia.", ("Atelectasis", "Pneumonia"), (-1, -1)),
    ("Findings concerning for pulmonary edema.", ("Edema",), (-1,)),
    ("Atelectasis is likely.", ("Atelectasis",), (-1,)),
    ("Scarring or atelectasis at the left base.", ("Atelectasis",), (-1,)),
    # CheXpert post-negation uncertainty patterns: "may be consistent/compatible with XXX", "XXX
    # could appear", "XXX may have this appearance", "maybe", "favor", "suspicious XXX", "question
    # XXX", "consider XXX", "secondary to XXX", "correlate clinically for XXX".
    ("Opacity may be consistent with pneumonia.", ("Pneumonia", "Lung Opacity"), (-1, 1)),
    ("The findings could be compatible with mild edema.", ("Edema",), (-1,)),
    ("Possibly consistent with atelectasis.", ("Atelectasis",), (-1,)),
    ("Findings consistent with pneumonia.", ("Pneumonia",), (1,)),
    ("A small effusion could appear this way.", ("Pleural Effusion",), (-1,)),
    ("Atelectasis may have this appearance.", ("Atelectasis",), (-1,)),
    ("Maybe a small pneumothorax.", ("Pneumothorax",), (-1,)),
    ("Findings favor atelectasis rather than pneumonia.", ("Atelectasis", "Pneumonia"), (-1, 0)),
    ("Suspicious nodule in the left upper lobe.", ("Lung Lesion",), (-1,)),
    ("Question early consolidation at the right base.", ("Consolidation",), (-1,)),
    ("Consider pneumonia in the right clinical setting.", ("Pneumonia",), (-1,)),
    ("Blunting of the costophrenic angle secondary to a small effusion.", ("Pleural Effusion",), (-1,)),
    ("Correlate clinically for pneumonia.", ("Pneumonia",), (-1,)),
    # "obscuring the XXX" / "XXX is obscured": the obscured thing is uncertain, not what obscures it.
    ("Basilar opacity obscuring the left hemidiaphragm.", ("Lung Opacity",), (1,)),
    ("A right effusion is partly obscured.", ("Pleural Effusion",), (-1,)),
    # Double negations are uncertain.
    ("Pneumonia cannot be excluded.", ("Pneumonia",), (-1,)),
    ("A small effusion is not excluded.", ("Pleural Effusion",), (-1,)),
    ("We cannot rule out a fracture.", ("Fracture",), (-1,)),
    ("No new consolidation.", ("Consolidation",), (-1,)),
    # Pseudo-negations negate nothing.
    ("No change in the small left pleural effusion.", ("Pleural Effusion",), (1,)),
    ("No significant change in moderate cardiomegaly.", ("Cardiomegaly",), (1,)),
    ("Bibasilar atelectasis without change.", ("Atelectasis",), (1,)),
    ("Not only atelectasis but also consolidation.", ("Atelectasis", "Consolidation"), (1, 1)),
    # Severity and laterality words do not hide the mention.
    ("Small left pleural effusion.", ("Pleural Effusion",), (1,)),
    ("Mild bibasilar atelectasis.", ("Atelectasis",), (1,)),
    ("Moderate cardiomegaly.", ("Cardiomegaly",), (1,)),
    ("Large right apical pneumothorax.", ("Pneumothorax",), (1,)),
    # IU-Xray de-identification masks.
    ("No XXXX pleural effusion.", ("Pleural Effusion",), (0,)),
    ("Pleural XXXX effusion on the left.", ("Pleural Effusion",), (1,)),
    ("XXXX XXXX consolidation in the right lower lobe.", ("Consolidation",), (1,)),
    # Descriptors: "stable" or "borderline" make an organ mention uncertain, enlargement positive.
    ("Stable cardiomediastinal silhouette.", ("Enlarged Cardiomediastinum",), (-1,)),
    ("Borderline heart size.", ("Cardiomegaly",), (-1,)),
    ("The cardiac silhouette is mildly enlarged.", ("Cardiomegaly",), (1,)),
    ("A nodule projects over the heart.", ("Cardiomegaly", "Lung Lesion"), (None, 1)),
    ("A catheter tip projects over the superior mediastinum.", ("Enlarged Cardiomediastinum", "Support Devices"),
     (None, 1)),
    # CheXpert's Enlarged Cardiomediastinum mentions include a bare "contour" and "cardiac silhouette
    # and vascularity"; "cardiac contour" is in its Cardiomegaly list too. Another organ's contour is
    # not the mediastinum's.
    ("Heart size and contour are normal.", ("Cardiomegaly", "Enlarged Cardiomediastinum"), (0, 0)),
    ("Normal cardiac contours.", ("Cardiomegaly", "Enlarged Cardiomediastinum"), (0, 0)),
    ("Enlarged cardiac contour.", ("Cardiomegaly", "Enlarged Cardiomediastinum"), (1, 1)),
    ("The cardiac silhouette and vascularity are normal.", ("Cardiomegaly", "Enlarged Cardiomediastinum"), (0, 0)),
    ("Stable hilar contours.", ("Enlarged Cardiomediastinum",), (-1,)),
    ("The cardiomediastinal silhouette is within normal limits for size and contour.",
     ("Enlarged Cardiomediastinum",), (0,)),
    ("The heart is normal in size and contour.", ("Cardiomegaly", "Enlarged Cardiomediastinum"), (0, 0)),
    ("Normal cardiomediastinal silhouette and hilar contours.", ("Enlarged Cardiomediastinum",), (0,)),
    ("Normal heart size, prominent hilar contours.", ("Cardiomegaly", "Enlarged Cardiomediastinum"), (0, 1)),
    ("Heart size normal, stable mediastinal contours.", ("Cardiomegaly", "Enlarged Cardiomediastinum"), (0, -1)),
    ("Contour deformity of the left seventh rib.", ("Enlarged Cardiomediastinum",), (None,)),
    ("The diaphragmatic contours are smooth.", ("Enlarged Cardiomediastinum",), (None,)),
    # CheXpert's Support Devices list has "marker" and "equipment"; "tracheostomy" alone is in its
    # other-findings list (its tube is a device), as are "plaque" and "fissure".
    ("Nipple markers are present.", ("Support Devices",), (1,)),
    ("Monitoring equipment overlies the chest.", ("Support Devices",), (1,)),
    ("Tracheostomy tube in place.", ("Support Devices",), (1,)),
    ("Prior tracheostomy.", ("Support Devices", "No Finding"), (None, None)),
    ("Calcified pleural plaques.", ("Pleural Other", "No Finding"), (None, None)),
    ("An azygos fissure is seen. The lungs are clear.", ("No Finding",), (None,)),
    # Look-alikes are not mentions.
    ("Small pericardial effusion.", ("Pleural Effusion",), (None,)),
    ("Calcified nodule in the left lung.", ("Lung Lesion",), (None,)),
    ("Pleural scarring at the apices.", ("Pleural Other", "Lung Opacity"), (1, None)),
    # A negated "bony abnormality" rules out a fracture; an affirmed one is not a fracture.
    ("No acute bony abnormality.", ("Fracture",), (0,)),
    ("Bony abnormality of the scapula.", ("Fracture",), (None,)),
    ("Right PICC line with tip in the SVC.", ("Support Devices",), (1,)),
]


@pytest.mark.parametrize("text, names, values", RULES)
def test_mention_rules(text, names, values):
    assert labels_of(text, *names) == values


def test_positive_mention_wins_over_negative_and_uncertain():
    assert labels_of("No left effusion. Small right effusion. Possible effusion.", "Pleural Effusion") == (1,)


def test_negative_and_uncertain_mentions_give_uncertain():
    assert labels_of("No right effusion. Possible left effusion.", "Pleural Effusion") == (-1,)


def test_heart_failure_makes_cardiomegaly_uncertain_unless_positive():
    assert labels_of("Findings consistent with congestive heart failure.", "Edema", "Cardiomegaly") == (1, -1)
    assert labels_of("Possible CHF. Heart size is normal.", "Edema", "Cardiomegaly") == (-1, -1)
    assert labels_of("CHF with moderate cardiomegaly.", "Cardiomegaly") == (1,)
    assert labels_of("No evidence of heart failure.", "Edema", "Cardiomegaly") == (0, None)


def test_no_finding_rules():
    assert label_report("")["No Finding"] == 1  # nothing mentioned: the reference's aggregation gives 1
    assert label_report("Heart size normal. No effusion.")["No Finding"] == 1
    # Support devices do not count.
    assert label_report("Right IJ catheter tip in the SVC. Lungs are clear.")["No Finding"] == 1
    assert label_report("Possible small effusion.")["No Finding"] is None
    assert label_report("Calcified granuloma in the right upper lobe. Lungs clear.")["No Finding"] is None
    assert label_report("Degenerative changes of the thoracic spine.")["No Finding"] is None
    assert label_report("No emphysema. No effusion.")["No Finding"] == 1  # negated other findings do not count


def test_cleaned_text_labels_like_raw_text():
    raw = "Mild cardiomegaly. No pleural effusion, pneumothorax or consolidation. Possible atelectasis."
    cleaned = "mild cardiomegaly . no pleural effusion pneumothorax or consolidation . possible atelectasis ."
    assert label_report(cleaned) == label_report(raw)


def test_label_reports_is_label_report_per_text():
    texts = [report for report, _ in CHEXPERT_SAMPLES]
    assert label_reports(iter(texts)) == [label_report(text) for text in texts]


def test_label_report_rejects_non_text():
    with pytest.raises(TypeError, match="str"):
        label_report(["No effusion."])


def test_labels_to_vector_order_and_policies():
    labels = dict.fromkeys(CHEXPERT_OBSERVATIONS)
    labels.update({"Cardiomegaly": 1, "Edema": 0, "Atelectasis": -1})
    vector = labels_to_vector(labels)
    assert len(vector) == len(CHEXPERT_OBSERVATIONS)
    index = CHEXPERT_OBSERVATIONS.index
    assert (vector[index("Cardiomegaly")], vector[index("Edema")], vector[index("Atelectasis")]) == (1.0, 0.0, 1.0)
    assert vector[index("Pneumothorax")] == 0.0
    zeros_policy = labels_to_vector(labels, uncertain_as=0.0, missing_as=-1.0)
    assert zeros_policy[index("Atelectasis")] == 0.0 and zeros_policy[index("Pneumothorax")] == -1.0


def test_labels_to_vector_errors_name_the_problem():
    with pytest.raises(ValueError, match="Pneumoperitoneum"):
        labels_to_vector({"Pneumoperitoneum": 1})
    with pytest.raises(ValueError, match="Edema"):
        labels_to_vector({"Edema": 2})


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_jsonl_reports_bad_lines_and_labels_the_rest(tmp_path, capsys):
    source = tmp_path / "reports.jsonl"
    source.write_text(
        json.dumps({"id": "a", "report": "Mild cardiomegaly."}) + "\n"
        "{not json\n"
        + json.dumps({"id": "c"}) + "\n"
        + json.dumps({"id": "d", "report": "No effusion."}) + "\n"
    )
    output = tmp_path / "labels.jsonl"
    assert main([str(source), "--output", str(output)]) == 1
    stderr = capsys.readouterr().err
    assert f"{source}:2:" in stderr and f"{source}:3:" in stderr
    records = read_jsonl(output)
    assert [record["id"] for record in records] == ["a", "d"]
    assert records[0]["labels"]["Cardiomegaly"] == 1
    assert records[1]["labels"]["Pleural Effusion"] == 0
    assert records[1]["labels"]["Edema"] is None


def test_cli_reads_r2gen_annotation(tmp_path):
    source = tmp_path / "annotation.json"
    source.write_text(json.dumps({
        "train": [{"id": "s1", "report": "Small left effusion.", "image_path": ["x.png"]}],
        "test": [{"id": "s2", "report": "No pneumothorax."}],
    }))
    output = tmp_path / "labels.jsonl"
    assert main([str(source), "-o", str(output)]) == 0
    records = {record["id"]: record["labels"] for record in read_jsonl(output)}
    assert records["s1"]["Pleural Effusion"] == 1 and records["s2"]["Pneumothorax"] == 0


def test_cli_reads_csv_with_id_column_and_headerless_csv(tmp_path):
    with_ids = tmp_path / "with_ids.csv"
    with with_ids.open("w", newline="") as file:
        csv.writer(file).writerows([["id", "report"], ["r7", "Possible pneumonia, no effusion."]])
    headerless = tmp_path / "headerless.csv"
    with headerless.open("w", newline="") as file:  # the CheXpert labeler's input format
        csv.writer(file).writerows([["No edema."], ["Moderate cardiomegaly,\nstable."]])
    output = tmp_path / "labels.jsonl"

    assert main([str(with_ids), "--output", str(output)]) == 0
    (record,) = read_jsonl(output)
    assert record["id"] == "r7" and record["labels"]["Pneumonia"] == -1

    assert main([str(headerless), "--output", str(output)]) == 0
    records = read_jsonl(output)
    assert [record["id"] for record in records] == [1, 2]
    assert records[0]["labels"]["Edema"] == 0 and records[1]["labels"]["Cardiomegaly"] == 1


def test_cli_reads_reports_column_and_reports_short_rows(tmp_path, capsys):
    source = tmp_path / "labeled.csv"  # the layout of the CheXpert labeler's output
    source.write_text('Reports,No Finding\n"No edema, no effusion.",1.0\n\nPossible pneumonia.,\n')
    output = tmp_path / "labels.jsonl"
    assert main([str(source), "--output", str(output)]) == 1  # the empty row 3 has no report field
    assert "row 3" in capsys.readouterr().err
    records = read_jsonl(output)
    assert [record["id"] for record in records] == [1, 3]
    assert records[0]["labels"]["Pleural Effusion"] == 0 and records[1]["labels"]["Pneumonia"] == -1


def test_cli_reports_invalid_annotation_json(tmp_path, capsys):
    source = tmp_path / "annotation.json"
    source.write_text('{"train": [')
    assert main([str(source), "--output", str(tmp_path / "out.jsonl")]) == 1
    assert "annotation.json:1: not valid JSON" in capsys.readouterr().err


def test_cli_reports_missing_input(tmp_path, capsys):
    assert main([str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "out.jsonl")]) == 1
    assert "missing.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_help_states_exit_codes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "Exit status" in capsys.readouterr().out


def test_atomic_write_keeps_earlier_result_when_writing_fails(tmp_path):
    output = tmp_path / "labels.jsonl"
    output.write_text("earlier result\n")

    def records():
        yield {"id": 1}
        raise RuntimeError("crash while labelling")

    with pytest.raises(RuntimeError):
        write_jsonl_atomically(output, records())
    assert output.read_text() == "earlier result\n"
    assert [path.name for path in tmp_path.iterdir()] == ["labels.jsonl"]
