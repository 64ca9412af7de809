"""One perception in both stages (``TRRGPerception``): the seeded builds draw the weights and the tiny
fixtures get the zero-shot probabilities they got before the module was shared, checkpoints keep their
layout, and the Trainer reloads its checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import xray_like
from trrg.assembly.hub_folders import load_model_folder, save_hub_folder

# Written by the code of commit 87b69c7, the last before TRRGPerception, from the inputs of conftest.py:
# for each seeded build the float64 sum of squares of every weight its model.safetensors holds (keys in
# that commit's layout), and the zero-shot probabilities and evidence-map sums of the tiny fixtures on
# STUDIES. How: in a worktree of 87b69c7, per model {key: float(tensor.double().square().sum())} over
# save_pretrained's file; predict_clues(..., return_maps=True) of the stage-2 fixture and
# predict_diseases(..., encode_prompt_bank(model, processor), return_maps=True) of the stage-1 fixture.
BEFORE = json.loads((Path(__file__).parent / "fixtures" / "seeded_builds_87b69c7.json").read_text())
STUDIES = [[xray_like(1), xray_like(2)], [xray_like(3)]]


def saved_weights(model, folder: Path) -> dict[str, float]:
    """Squared norms of the saved tensors; the training-distribution statistics (added after the fixture,
    zeros until training ends) are checked to be unfitted and left out."""
    model.save_pretrained(folder)
    with safe_open(folder / "model.safetensors", "pt") as weights:
        statistics = [key for key in weights.keys() if key.startswith("training_distribution.") or ".training_distribution." in key]
        assert all(not weights.get_tensor(key).any() for key in statistics)
        return {key: float(weights.get_tensor(key).double().square().sum()) for key in sorted(weights.keys())
                if key not in statistics}


def test_seeded_builds_draw_the_weights_they_drew_before_the_shared_perception(tiny_tokenizer, tiny_pretrain_model,
                                                                                 tmp_path):
    """Ablation arms and reruns are paired by seed: each build draws the same initial weights as before,
    and saves them under the same names (the checkpoint layout did not change)."""
    from trrg.assembly.bridge import bridge
    from trrg.assembly.build import build_finetune_model

    builds = {
        "finetune seed 0": build_finetune_model("tiny", tokenizer=tiny_tokenizer, seed=0)[0],
        "finetune seed 3 without clue interaction": build_finetune_model(
            "tiny", tokenizer=tiny_tokenizer, seed=3, clue={"use_clue_interaction": False})[0],
        "pretrain seed 0": tiny_pretrain_model[0],
        "bridged seed 5": bridge(None, pretrained=tiny_pretrain_model, seed=5)[0],
    }
    for name, model in builds.items():
        weights = saved_weights(model, tmp_path / name.replace(" ", "-"))
        assert list(weights) == list(BEFORE["weights"][name]), name
        assert weights == pytest.approx(BEFORE["weights"][name], rel=1e-6, abs=1e-9), name


def test_zero_shot_probabilities_and_evidence_are_those_before_the_shared_perception(tiny_finetune_model,
                                                                                       tiny_pretrain_model):
    from trrg.assembly.bridge import encode_prompt_bank

    model, processor = tiny_finetune_model
    inputs = processor(images=STUDIES, return_tensors="pt")
    clues = model.predict_clues(inputs["pixel_values"], inputs["view_mask"], return_maps=True)
    pretrain, pretrain_processor = tiny_pretrain_model
    pixels = pretrain_processor.image_processor(STUDIES, return_tensors="pt")
    perception = pretrain.predict_diseases(pixels["pixel_values"], pixels["view_mask"],
                                           encode_prompt_bank(pretrain, pretrain_processor), return_maps=True)
    for stage, out in (("finetune", clues), ("pretrain", perception)):
        probs = torch.tensor(BEFORE["probabilities"][stage])
        assert torch.allclose(out.disease_probs, probs, rtol=0, atol=1e-6), stage
        sums = torch.tensor(BEFORE["evidence_map_sums"][stage], dtype=torch.float64)
        assert torch.allclose(out.evidence_maps.double().sum(dim=(-1, -2)), sums, rtol=1e-5, atol=1e-6), stage


def test_a_folder_in_the_earlier_layout_loads_and_the_trainer_reloads_its_checkpoints(tiny_finetune_model, tmp_path):
    """Checkpoints name the perception's parts at the top level, as every TRRG folder always has
    (transformers renames them on load and back on save); the Trainer's load_state_dict of a checkpoint
    file (``--resume``, load_best_model_at_end) reads that layout too."""
    model, processor = tiny_finetune_model
    folder = save_hub_folder(model, processor, tmp_path / "model")
    with safe_open(folder / "model.safetensors", "pt") as weights:
        top_level = {key.split(".")[0] for key in weights.keys()}
    assert {"vision_model", "visual_projection", "patch_projection", "logit_scale", "disease_pos_weight",
            "prompt_bank"} <= top_level and "perception" not in top_level
    loaded, loaded_processor = load_model_folder(folder, expected="trrg")
    inputs = processor(images=STUDIES, return_tensors="pt")
    assert torch.equal(loaded.predict_clues(inputs["pixel_values"], inputs["view_mask"]).disease_probs,
                       model.predict_clues(inputs["pixel_values"], inputs["view_mask"]).disease_probs)

    with torch.no_grad():
        loaded.perception.logit_scale.fill_(0.0)
        loaded.perception.vision_model.backbone.embedder.embedder.convolution.weight.zero_()
    result = loaded.load_state_dict(load_file(folder / "model.safetensors"), strict=False)
    assert not result.unexpected_keys
    assert not [key for key in result.missing_keys if "perception" in key and "training_distribution." not in key]
    assert torch.equal(loaded.perception.logit_scale, model.perception.logit_scale)
    assert torch.equal(loaded.perception.vision_model.backbone.embedder.embedder.convolution.weight,
                       model.perception.vision_model.backbone.embedder.embedder.convolution.weight)
