"""One way from a study to a report (``TRRGReportPipeline``): the images encoded once per batch, what
``generate`` writes, given clue probabilities, streaming, sentences with what they state, and one answer
for one study from ``trrg generate``, ``trrg evaluate`` and the Space."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import xray_like
from trrg.assembly.hub_folders import save_hub_folder
from trrg.modeling.pipeline_trrg import TRRGReport, sentences_of

STUDIES = [[xray_like(1), xray_like(2)], [xray_like(3)]]


def test_the_pipeline_encodes_each_batch_once_and_writes_what_generate_writes(tiny_finetune_model):
    model, processor = tiny_finetune_model
    reporter = model.report_pipeline(processor)
    encodings = []
    hook = model.perception.vision_model.register_forward_hook(lambda *_: encodings.append(1))
    try:
        greedy = reporter(STUDIES, max_new_tokens=8, return_evidence_maps=True, verify=False)
        assert len(encodings) == 1  # perception and generation from one encoding
        beams = reporter(STUDIES[0], max_new_tokens=8, num_beams=3, verify=False)
        assert len(encodings) == 2  # beam search too: the encoder's features are repeated per beam
        reporter(STUDIES, max_new_tokens=8, clue_probs=torch.full((2, 14), 0.9))
        assert len(encodings) == 3  # and clue completion's sampling (every clue present: it runs)
    finally:
        hook.remove()
    inputs = processor(images=STUDIES, return_tensors="pt")
    with torch.no_grad():
        plain = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        one = processor(images=[STUDIES[0]], return_tensors="pt")
        plain_beams = model.generate(**one, max_new_tokens=8, num_beams=3)
    clues = model.predict_clues(inputs["pixel_values"], inputs["view_mask"], return_maps=True)
    assert [report.report for report in greedy] == processor.batch_decode(plain, prompt_length=inputs["input_ids"].shape[1])
    assert isinstance(beams, TRRGReport)  # one study in, one report out
    assert beams.report == processor.batch_decode(plain_beams, prompt_length=one["input_ids"].shape[1])[0]
    names = list(model.config.disease_names)
    for row, report in enumerate(greedy):
        perception = report.perception
        assert list(perception.disease_probs) == names
        assert list(perception.disease_probs.values()) == clues.disease_probs[row].tolist()
        assert [int(c) for c in perception.clues.values()] == clues.clue_states[row].tolist()
        views = len(STUDIES[row])  # padded views are dropped
        assert torch.equal(perception.evidence_maps, clues.evidence_maps[row, :views])
        assert perception.in_distribution is None  # unknown: the model carries no training statistics
    assert beams.perception.evidence_maps is None and beams.perception.attribution_maps is None  # only on request
    # The attribution maps (the backbone's finest grid) come on request, per study, padded views dropped.
    attributed = reporter(STUDIES, max_new_tokens=2, return_attribution_maps=True, verify=False)
    expected = model.attribution_maps(inputs["pixel_values"], inputs["view_mask"])
    for row, report in enumerate(attributed):
        assert torch.allclose(report.perception.attribution_maps, expected[row, : len(STUDIES[row])], atol=1e-6)
        assert report.to_dict()["attribution_maps"]["grid"] == list(expected.shape[-2:])


def test_given_clue_probabilities_decide_the_clues_and_one_study_streams(tiny_finetune_model):
    from transformers import TextStreamer

    model, processor = tiny_finetune_model
    reporter = model.report_pipeline(processor)
    given = torch.tensor([[0.9] * 14, [0.1] * 14])
    reports = reporter(STUDIES, clue_probs=given, max_new_tokens=6, verify=False)
    assert all(reports[0].perception.clues.values()) and not any(reports[1].perception.clues.values())
    assert list(reports[0].perception.disease_probs.values()) == pytest.approx([0.9] * 14)
    inputs = processor(images=STUDIES, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**inputs, clue_probs=given, max_new_tokens=6, do_sample=False)
    assert [r.report for r in reports] == processor.batch_decode(ids, prompt_length=inputs["input_ids"].shape[1])

    class Collected(TextStreamer):
        text = ""

        def on_finalized_text(self, text, stream_end=False):
            self.text += text

    streamer = Collected(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    streamed = reporter(STUDIES[1], max_new_tokens=6, streamer=streamer, verify=False)
    assert streamer.text.strip() == streamed.report
    with pytest.raises(ValueError, match="one report per study"):
        reporter(STUDIES[0], num_return_sequences=2)


def test_each_sentence_points_at_the_observations_it_states():
    sentences = sentences_of("No pleural effusion. Mild cardiomegaly, possible atelectasis. Lungs are clear.")
    assert [s.text for s in sentences] == ["No pleural effusion", "Mild cardiomegaly, possible atelectasis",
                                           "Lungs are clear"]
    assert sentences[0].observations == {"Pleural Effusion": "negative"}
    assert sentences[1].observations == {"Cardiomegaly": "positive", "Atelectasis": "uncertain"}
    assert "No Finding" not in sentences[2].observations  # concluded for a report, stated by no sentence


# ---------------------------------------------------------------------------------------------
# One answer for one study, whoever asks
# ---------------------------------------------------------------------------------------------


def test_trrg_generate_trrg_evaluate_and_the_space_give_one_report_for_one_study(tiny_finetune_model, tiny_phantom,
                                                                                  tmp_path, capsys):
    pytest.importorskip("gradio")
    from space_helpers import space_report

    from trrg.cli import main
    from trrg.space import app

    folder = save_hub_folder(*tiny_finetune_model, tmp_path / "model")
    settings = ["--max_new_tokens", "12"]
    assert main(["evaluate", "--model", str(folder), "--data", str(tiny_phantom), "--split", "test", "--out",
                 str(tmp_path / "eval"), "--max_studies", "1", "--no_meteor", *settings]) == 0
    [evaluated] = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    annotation = json.loads((tiny_phantom / "annotation.json").read_text())
    [study] = [entry for entry in annotation["test"] if entry["id"] == evaluated["id"]]
    images = [tiny_phantom / "images" / path for path in study["image_path"]]
    capsys.readouterr()
    assert main(["generate", "--model", str(folder), "--json", *settings, *map(str, images)]) == 0
    generated = json.loads(capsys.readouterr().out)
    perception, spaced = space_report(*app.load_model(str(folder)), *images, tokens=12)

    assert generated["report"] == evaluated["report"] == spaced.report
    assert list(generated["disease_probs"].values()) == evaluated["disease_probs"]
    assert [round(p, 4) for p in perception.disease_probs.values()] == evaluated["disease_probs"]
    assert [int(name in generated["clues_present"]) for name in generated["disease_probs"]] == evaluated["clues"]
    assert generated["sentences"] == [{"text": s.text, "observations": s.observations} for s in spaced.sentences]
    assert {"report", "disease_probs", "clues_present", "clue_thresholds", "evidence_maps", "sentences",
            "in_distribution"} <= set(generated)


def test_sampling_never_draws_a_placeholder_as_a_report_token(tiny_finetune_model):
    model, processor = tiny_finetune_model
    reporter = model.report_pipeline(processor)
    placeholders = [model.config.image_token_id, model.config.clue_token_id]
    assert reporter._without_placeholders({"do_sample": False}) == {"do_sample": False}  # greedy never picks them
    sampled = reporter._without_placeholders({"do_sample": True, "suppress_tokens": [7]})
    assert sampled["suppress_tokens"] == [7, *placeholders]
    # a placeholder the writer is made to prefer is still never drawn (drawn, it would be read as one on
    # the next step, and generation would stop with an error)
    weight = model.get_output_embeddings().weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight[placeholders] = weight.abs().max() * 50  # huge logits for the placeholders
        torch.manual_seed(0)
        report = reporter(STUDIES[1], max_new_tokens=6, do_sample=True, verify=False)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert processor.tokenizer.convert_ids_to_tokens(placeholders)[0] not in report.report
