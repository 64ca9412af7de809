"""The clue pathway as a mechanism: an LLM trained with clues writes what its clues say.

The images carry no information here (one fixed noise image for every study), so whatever the
report states about a finding can only come from the clue tokens. The test fails when the clues do
not reach the LLM, or reach it in a form it does not learn to read within a short training run
(the first design's soft clues: a p-weighted prompt mix through an MLP from small init).
"""

import itertools

import pytest
import torch

from conftest import xray_like

FINDINGS = {  # disease -> (sentence when present, sentence when absent)
    "Cardiomegaly": ("the heart is enlarged .", "heart size is normal ."),
    "Pleural Effusion": ("small left pleural effusion .", "no pleural effusion ."),
    "Pneumothorax": ("small right pneumothorax .", "no pneumothorax ."),
    "Edema": ("mild pulmonary edema .", "no pulmonary edema ."),
    "Consolidation": ("right upper lobe consolidation .", "no focal consolidation ."),
}
NAMES = list(FINDINGS)
STEPS = 120
BATCH = 8


def _report(states) -> str:
    return " ".join(FINDINGS[name][0 if on else 1] for name, on in zip(NAMES, states))


@pytest.fixture(scope="module")
def trained_on_clues(tiny_tokenizer):
    """A tiny stage-2 model over 5 diseases, trained 120 steps with reference clues (as `trrg finetune`
    does) on reports that state exactly the clues."""
    from trrg.modeling.modeling_trrg import TRRGForConditionalGeneration
    from trrg.assembly.build import _pair_shared_init
    from trrg.assembly.build import build_processor, finetune_config, set_generation_defaults
    from trrg.assembly.presets import PRESETS

    config = finetune_config(PRESETS["tiny"], tiny_tokenizer)
    config.disease_names = NAMES
    config.disease_prompts = {name: ["there is x .", "there is no x ."] for name in NAMES}
    torch.manual_seed(0)
    model = TRRGForConditionalGeneration(config)
    _pair_shared_init(model, 0)
    set_generation_defaults(model, max_new_tokens=40)
    processor = build_processor(tiny_tokenizer, config)
    model.freeze_perception()
    generator = torch.Generator().manual_seed(0)
    pixels = processor.image_processor([[xray_like(7)]] * BATCH, return_tensors="pt")
    with torch.no_grad():  # the frozen encoder's features, computed once (as the trainer's cache does)
        features = model.vision_model(pixels["pixel_values"], pixels["view_mask"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    combos = torch.tensor(list(itertools.product([0, 1], repeat=len(NAMES))))
    model.train()
    for _ in range(STEPS):
        states = combos[torch.randint(len(combos), (BATCH,), generator=generator)]
        text = processor.encode_prompts([1] * BATCH, reports=[_report(s) for s in states.tolist()])
        out = model(**text, vision_features=features, view_mask=pixels["view_mask"], clue_states=states,
                    disease_labels=states.float())
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), processor


def _written(model, processor, states: torch.Tensor) -> list[list[int]]:
    from trrg.processing.labeler import label_report

    inputs = processor(images=[[xray_like(7)]] * len(states), return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**inputs, clue_states=states, max_new_tokens=40)
    reports = processor.batch_decode(ids, prompt_length=inputs["input_ids"].shape[1])
    return [[int(label_report(r)[name] == 1) for name in NAMES] for r in reports]


def test_switching_one_clue_on_writes_that_finding_and_no_other(trained_on_clues):
    model, processor = trained_on_clues
    normal = torch.zeros(1, len(NAMES), dtype=torch.long)
    assert _written(model, processor, normal) == [[0] * len(NAMES)]
    one_on = torch.eye(len(NAMES), dtype=torch.long)
    written = _written(model, processor, one_on)
    followed = [row == expected for row, expected in zip(written, one_on.tolist())]
    assert sum(followed) >= len(NAMES) - 1, f"clue switched on -> labels written: {written}"


def test_report_labels_follow_the_injected_decisions(trained_on_clues):
    model, processor = trained_on_clues
    states = torch.randint(0, 2, (24, len(NAMES)), generator=torch.Generator().manual_seed(1))
    written = torch.tensor(_written(model, processor, states))
    agreement = (written == states).float().mean().item()
    assert agreement >= 0.95, f"only {agreement:.2f} of the clue decisions are written"
