"""The console script end to end on tiny inputs: init, generate, evaluate, and clear failures."""

import json

import pytest

from trrg.cli import COMMANDS, main
from trrg.assembly.hub_folders import save_hub_folder


def test_every_command_has_help(capsys):
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in COMMANDS)
    assert main(["no-such-command"]) == 2


def test_generate_prints_report_and_clues_as_json(tiny_finetune_model, tiny_phantom, tmp_path, capsys):
    from trrg.commands.generate import main as generate

    folder = save_hub_folder(*tiny_finetune_model, tmp_path / "model")
    image = tiny_phantom / "images" / "phantom_000000" / "0.png"
    assert generate(["--model", str(folder), "--json", "--max_new_tokens", "5", str(image)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["disease_probs"]) == set(tiny_finetune_model[0].config.disease_names)
    maps = result["evidence_maps"]
    assert len(maps["views"]) == 1 and set(maps["views"][0]) == set(result["disease_probs"])
    assert len(maps["views"][0]["Fracture"]) == maps["grid"][0]
    assert isinstance(result["report"], str) and result["attribution_maps"] is None  # only on request
    assert generate(["--model", str(folder), "--json", "--max_new_tokens", "5", "--attribution_maps", str(image)]) == 0
    fine = json.loads(capsys.readouterr().out)["attribution_maps"]
    assert fine["grid"][0] > maps["grid"][0] and len(fine["views"][0]["Fracture"]) == fine["grid"][0]
    with pytest.raises(SystemExit, match="notes.txt"):
        (tmp_path / "notes.txt").write_text("not an image")
        generate(["--model", str(folder), str(tmp_path / "notes.txt")])


def test_evaluate_writes_predictions_and_metrics_with_protocol(tiny_finetune_model, tiny_phantom, tmp_path):
    from trrg.commands.evaluate_model import main as evaluate

    folder = save_hub_folder(*tiny_finetune_model, tmp_path / "model")
    out = tmp_path / "eval"
    assert evaluate(["--model", str(folder), "--data", str(tiny_phantom), "--split", "test", "--out", str(out),
                     "--max_new_tokens", "6", "--no_meteor"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert metrics["n"] == len(predictions) == 8 and metrics["split"] == "test"
    assert {"bleu_4", "ce_micro_f1_14", "ce_normal_collapse", "versions"} <= set(metrics)
    assert metrics["meteor"] is None and metrics["max_views"] is None
    # --max_views 1: the same studies read from their frontal view alone (a one-view site)
    assert evaluate(["--model", str(folder), "--data", str(tiny_phantom), "--split", "test", "--out",
                     str(tmp_path / "frontal"), "--max_new_tokens", "6", "--no_meteor", "--max_views", "1"]) == 0
    frontal = [json.loads(line) for line in (tmp_path / "frontal" / "predictions.jsonl").read_text().splitlines()]
    annotation = json.loads((tiny_phantom / "annotation.json").read_text())
    views = {entry["id"]: len(entry["image_path"]) for entry in annotation["test"]}
    assert json.loads((tmp_path / "frontal" / "metrics.json").read_text())["max_views"] == 1
    for both, one in zip(predictions, frontal):
        assert (both["disease_probs"] == one["disease_probs"]) == (views[both["id"]] == 1), both["id"]


def test_init_refuses_a_non_empty_folder_and_names_a_missing_backbone(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("earlier work")
    with pytest.raises(SystemExit, match="taken is not empty; choose a new --out folder"):
        main(["init", "--out", str(tmp_path / "taken")])
    assert (tmp_path / "taken" / "keep.txt").read_text() == "earlier work"
    assert main(["init", "--out", str(tmp_path / "new"), "--llm", str(tmp_path / "missing-llm")]) == 2
    assert "missing-llm" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_evaluate_needs_only_the_images_of_its_split(tiny_finetune_model, tiny_phantom, tmp_path):
    """Test data is often stored apart: evaluating the test split must not look for training images."""
    import shutil

    from trrg.commands.evaluate_model import main as evaluate

    data = shutil.copytree(tiny_phantom, tmp_path / "data")
    annotation = json.loads((data / "annotation.json").read_text())
    for entry in annotation["train"]:
        for image in entry["image_path"]:
            (data / "images" / image).unlink()
    folder = save_hub_folder(*tiny_finetune_model, tmp_path / "model")
    assert evaluate(["--model", str(folder), "--data", str(data), "--split", "test", "--out", str(tmp_path / "eval"),
                     "--max_new_tokens", "4", "--no_meteor"]) == 0
    with pytest.raises(ValueError, match="image file"):
        evaluate(["--model", str(folder), "--data", str(data), "--split", "train", "--out", str(tmp_path / "e2"),
                  "--max_new_tokens", "4", "--no_meteor"])


def test_a_damaged_model_config_and_a_bad_single_view_rate_are_named(tiny_phantom, tmp_path, capsys):
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "config.json").write_text("{not json")
    assert main(["finetune", "--model", str(tmp_path / "damaged"), "--data", str(tiny_phantom),
                 "--output_dir", str(tmp_path / "out")]) == 2
    assert "damaged/config.json: not a readable model config" in capsys.readouterr().err
    from trrg.trainers.collators import SingleViewSchedule

    with pytest.raises(ValueError, match=r"--single_view_rate must be in \[0, 1\]"):
        SingleViewSchedule(2.0)
    assert not (tmp_path / "out").exists()
