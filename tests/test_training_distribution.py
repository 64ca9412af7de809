"""The out-of-distribution flag: what the training images look like to the encoder is recorded at the
end of training, saved with the model, and every prediction says whether a study resembles them."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from trrg.modeling.distribution_trrg import TRRGTrainingDistribution, chosen_layers, mahalanobis, shrunk_covariance


def test_the_shrunk_covariance_is_ledoit_wolf_and_invertible():
    torch.manual_seed(0)
    few = torch.randn(20, 50)  # fewer samples than dimensions: the sample covariance is singular
    covariance = shrunk_covariance(few)
    assert torch.linalg.matrix_rank(covariance) == 50
    many = torch.randn(5000, 4) * torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.allclose(shrunk_covariance(many).diagonal().float(), torch.tensor([1.0, 4.0, 9.0, 16.0]), rtol=0.1)
    assert mahalanobis(torch.zeros(2, 4), torch.zeros(4), torch.eye(4)).tolist() == [0.0, 0.0]


def test_the_threshold_flags_the_false_alarm_rate_of_held_out_studies_and_far_ones():
    torch.manual_seed(0)
    layers = [torch.randn(600, 2, 6), torch.randn(600, 2, 3)]  # (studies, views, size) per layer
    mask = torch.ones(600, 2, dtype=torch.long)
    fit = [[layer[:400, position] for position in range(2)] for layer in layers]
    held_out = [[layer[400:, position] for position in range(2)] for layer in layers]
    distribution = TRRGTrainingDistribution([6, 3], max_views=2)
    assert distribution.familiarity([layer[:1] for layer in layers], mask[:1]) is None  # not fitted: unknown
    distribution.fit(fit, held_out, mask[400:], false_alarm_rate=0.05)
    scores = distribution.familiarity([layer[400:] for layer in layers], mask[400:])
    assert 0.04 <= float((scores > 1).float().mean()) <= 0.06
    far = distribution.familiarity([layer[:5] + 8.0 for layer in layers], mask[:5])
    assert (far > 1).all()
    assert chosen_layers(3) == [0, 1, 2] and chosen_layers(13) == [0, 3, 6, 9, 12]


@pytest.fixture(scope="module")
def fitted(tiny_finetune_model, tiny_phantom, tmp_path_factory):
    from trrg.assembly.hub_folders import load_model_folder, save_hub_folder
    from trrg.processing.studies import load_studies
    from trrg.trainers.training_distribution import fit_training_distribution

    model, processor = copy.deepcopy(tiny_finetune_model[0]), tiny_finetune_model[1]
    studies = load_studies(tiny_phantom)
    summary = fit_training_distribution(model, processor, studies["train"], studies["val"])
    folder = save_hub_folder(model, processor, tmp_path_factory.mktemp("fitted") / "model")
    return load_model_folder(folder, expected="trrg"), folder, summary, studies


def _familiarity(model, processor, studies):
    inputs = processor(images=studies, return_tensors="pt")
    return model.eval().predict_clues(inputs["pixel_values"], inputs["view_mask"]).familiarity


def test_a_blank_image_and_noise_are_flagged_the_phantom_is_not(fitted, tiny_finetune_model):
    (model, processor), _, summary, studies = fitted
    assert summary["held_out_studies"] == 9 and summary["fit_studies"] == 39  # 8 val studies < 50: a fifth of train
    assert json.loads((fitted[1] / "config.json").read_text())["training_distribution"]["layers"] == summary["layers"]
    test = [[row["images"][0]] for row in studies["test"]]
    blank = Image.fromarray(np.zeros((64, 64), np.uint8))
    noise = Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    in_distribution = _familiarity(model, processor, test)
    outside = _familiarity(model, processor, [[blank], [noise]])
    assert float(in_distribution.median()) < 1 and (outside > 1).all()
    assert _familiarity(tiny_finetune_model[0], processor, [[blank]]) is None  # no statistics: unknown


def test_every_route_says_whether_the_study_is_in_distribution(fitted, tmp_path, capsys):
    from trrg.commands.generate import main as generate
    from trrg.evaluation.generation import evaluate_model

    (model, processor), folder, _, studies = fitted
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(blank)
    assert generate(["--model", str(folder), str(blank), "--max_new_tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith("WARNING: this image does not resemble the images this model was trained on")
    assert generate(["--model", str(folder), str(blank), "--max_new_tokens", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["in_distribution"] is False and result["familiarity"] > 1
    rows = list(studies["test"])[:4]
    metrics = evaluate_model(model, processor, rows, tmp_path / "eval", max_new_tokens=4, meteor=False, progress=False)
    assert metrics["out_of_distribution_rate"] is not None and 0 <= metrics["out_of_distribution_count"] <= 4
    predictions = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert all("familiarity" in row for row in predictions)


def test_the_bridge_carries_stage_1_statistics(tiny_pretrain_model, tiny_phantom):
    from trrg.assembly.bridge import bridge
    from trrg.processing.studies import load_studies
    from trrg.trainers.training_distribution import fit_training_distribution

    model, processor = copy.deepcopy(tiny_pretrain_model[0]), tiny_pretrain_model[1]
    fit_training_distribution(model, processor, load_studies(tiny_phantom)["train"])
    stage_two, _ = bridge(None, pretrained=(model, processor))
    assert stage_two.perception.training_distribution.fitted
    assert torch.equal(stage_two.perception.training_distribution.threshold, model.perception.training_distribution.threshold)
