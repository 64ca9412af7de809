"""The Gradio Space: pure predict(), a served demo called with gradio_client, bad inputs, file access."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
import torch

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from space_helpers import EXAMPLES, GOOD_PNG, bad_inputs, running_demo, write_dicom  # noqa: E402

from trrg.space import app  # noqa: E402

NEW_TOKENS = 20


def greedy_report(model, processor, paths, **settings) -> str:
    inputs = processor(images=[[app._image_module(processor).load_xray_image(p) for p in paths]], return_tensors="pt")
    with torch.no_grad():
        sequences = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, **settings)
    return processor.batch_decode(sequences, prompt_length=inputs["input_ids"].shape[1])[0]


# --- pure predict() -------------------------------------------------------------------------


def test_predict_streams_growing_prefixes_of_the_greedy_report(tiny_finetune_model):
    model, processor = tiny_finetune_model
    outputs = list(app.predict(str(GOOD_PNG), None, 1, NEW_TOKENS, model=model, processor=processor))
    reports = [report for report, _, _ in outputs]
    assert reports[0] == "" and len(reports) > 3  # probabilities first, then the report token by token
    for shorter, longer in zip(reports, reports[1:]):
        assert longer.startswith(shorter)
    assert reports[-1] == greedy_report(model, processor, [GOOD_PNG]) != ""
    table = outputs[-1][1]
    assert list(table["disease"]) == list(model.config.disease_names) and len(table) == 14
    expected = model.predict_diseases(**{k: v for k, v in processor(images=[[app._image_module(processor).load_xray_image(GOOD_PNG)]]).items() if k in ("pixel_values", "view_mask")})[0]
    assert torch.allclose(torch.tensor(table["probability"].to_numpy(), dtype=torch.float32), expected, atol=1e-3)


def test_predict_with_beams_gives_the_beam_search_report_in_one_piece(tiny_finetune_model):
    model, processor = tiny_finetune_model
    frontal, lateral = EXAMPLES / "phantom_normal_frontal.png", EXAMPLES / "phantom_normal_lateral.png"
    outputs = list(app.predict(str(frontal), str(lateral), 2, NEW_TOKENS, model=model, processor=processor))
    assert [report for report, _, _ in outputs][:1] == [""] and len(outputs) == 2
    assert outputs[-1][0] == greedy_report(model, processor, [frontal, lateral], num_beams=2)


def test_predict_reads_dicom_and_jpeg(tiny_finetune_model, tmp_path):
    import numpy as np
    from PIL import Image

    model, processor = tiny_finetune_model
    pixels = np.asarray(Image.open(GOOD_PNG), dtype=np.uint16) * 16  # 12-bit
    dicom = write_dicom(tmp_path / "study.dcm", pixels)
    jpeg = tmp_path / "study.jpg"
    Image.open(GOOD_PNG).convert("L").save(jpeg, quality=95)
    for path in (dicom, jpeg):
        report, table, _ = list(app.predict(str(path), None, 1, 8, model=model, processor=processor))[-1]
        assert len(table) == 14 and isinstance(report, str)


def test_predict_refuses_a_missing_frontal_view(tiny_finetune_model):
    model, processor = tiny_finetune_model
    with pytest.raises(gr.Error, match="frontal view"):
        next(app.predict(None, None, 1, NEW_TOKENS, model=model, processor=processor))


def test_bad_files_raise_gr_error_with_the_loader_message_and_the_upload_name(tiny_finetune_model, tmp_path):
    model, processor = tiny_finetune_model
    for path, fragment in bad_inputs(tmp_path / "bad").items():
        with pytest.raises(gr.Error) as error:
            next(app.predict(str(path), None, 1, NEW_TOKENS, model=model, processor=processor))
        assert fragment in error.value.message and path.name in error.value.message
        assert str(tmp_path) not in error.value.message  # the server's folders are not shown


def test_clue_text_lists_the_decisions_with_each_diseases_threshold(tiny_finetune_model):
    config = tiny_finetune_model[0].config.__class__.from_dict(tiny_finetune_model[0].config.to_dict())
    probs = torch.tensor([0.9] + [0.1] * 8 + [0.25] + [0.1] * 3 + [0.6])
    config.clue_config.clue_thresholds = [0.5] * 9 + [0.2] + [0.5] * 4  # pneumothorax tuned low
    text = app.clues_markdown(probs, config)
    assert "**No Finding**: 0.90" in text and "**Support Devices**: 0.60" in text
    assert "**Pneumothorax**: 0.25 (threshold 0.20)" in text and "Cardiomegaly" not in text
    assert "the other 11 are injected as *absent*" in text


def test_banner_states_intended_use_and_training_data():
    for is_phantom in (True, False, None):
        assert "Not for clinical use; not a medical device" in app.banner(is_phantom)
    assert "synthetic phantom" in app.banner(True) and "synthetic" not in app.banner(False)
    assert "unknown" in app.banner(None)
    config = type("Config", (), {})()
    assert app.training_data_of(config) is None
    config.trrg_training_data = "phantom"
    assert app.training_data_of(config) is True
    config.trrg_training_data = "mimic-cxr"
    assert app.training_data_of(config) is False


def test_load_model_reads_a_hub_folder_with_remote_code(tiny_finetune_model, tmp_path):
    from trrg.assembly.hub_folders import save_hub_folder

    model, processor = tiny_finetune_model
    save_hub_folder(model, processor, tmp_path / "model")
    loaded, loaded_processor = app.load_model(str(tmp_path / "model"))
    assert type(loaded).__name__ == "TRRGForConditionalGeneration" and not loaded.training
    outputs = list(app.predict(str(GOOD_PNG), None, 1, 8, model=loaded, processor=loaded_processor))
    assert outputs[-1][0] == list(app.predict(str(GOOD_PNG), None, 1, 8, model=model, processor=processor))[-1][0]


def test_space_command_checks_its_model_before_loading(monkeypatch, tmp_path, tiny_finetune_model, capsys):
    from trrg.cli import main

    monkeypatch.delenv("TRRG_MODEL", raising=False)
    assert main(["space"]) == 2
    assert "pass --model" in capsys.readouterr().err
    assert main(["space", "--model", str(tmp_path / "runs" / "demo" / "model")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["space", "--model", str(tmp_path / "empty")]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_the_demo_has_the_components_the_issue_asks_for(tiny_finetune_model):
    model, processor = tiny_finetune_model
    demo = app.build_demo(model, processor, True)
    kinds = {type(block).__name__ for block in demo.blocks.values()}
    assert {"File", "Button", "Textbox", "BarPlot", "Accordion", "Slider", "Dataset"} <= kinds
    assert "Report" in [getattr(block, "label", None) for block in demo.blocks.values()]
    assert demo._queue.max_size == app.QUEUE_SIZE and demo._queue.default_concurrency_limit == 1
    files = [block for block in demo.blocks.values() if type(block).__name__ == "File"]
    assert all(".dcm" in block.file_types and ".png" in block.file_types for block in files)


# --- served demo ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tiny_finetune_model):
    model, processor = tiny_finetune_model
    with running_demo(model, processor) as url:
        yield url, gradio_client.Client(url, verbose=False)


def call(client, frontal, lateral=None, beams=1, tokens=NEW_TOKENS):
    from gradio_client import handle_file

    lateral = None if lateral is None else handle_file(str(lateral))
    return client.predict(handle_file(str(frontal)), lateral, beams, tokens, api_name="/generate_report")


def probabilities_of(plot_value: dict) -> dict[str, float]:
    return {row[0]: row[1] for row in plot_value["data"]}


def test_served_demo_returns_report_and_14_probabilities(served, tiny_finetune_model):
    _, client = served
    report, plot, clues = call(client, GOOD_PNG)
    assert report == greedy_report(*tiny_finetune_model, [GOOD_PNG]) and report.strip()
    probs = probabilities_of(plot)
    assert list(probs) == list(tiny_finetune_model[0].config.disease_names)
    assert all(0.0 <= p <= 1.0 for p in probs.values())
    assert "Clues injected as *present*" in clues


def test_served_demo_refuses_bad_files_and_keeps_serving(served, tmp_path):
    from gradio_client.exceptions import AppError

    _, client = served
    for path, fragment in bad_inputs(tmp_path).items():
        with pytest.raises(AppError, match=fragment):
            call(client, path)
    report, plot, _ = call(client, GOOD_PNG)
    assert report and len(plot["data"]) == 14


def test_files_outside_the_upload_folder_cannot_be_read(served, tmp_path):
    from gradio_client.exceptions import AppError

    url, client = served
    secret = tmp_path / "secret.png"  # a valid image the server may not read: not uploaded
    secret.write_bytes(GOOD_PNG.read_bytes())
    # The file routes refuse paths outside gradio's upload/cache folders.
    for route in ("gradio_api/file=", "file="):
        for target in ("/etc/passwd", str(secret), str(app.__file__)):
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(url + route + target, timeout=10)
            assert error.value.code in (403, 404)
    # A plain string path is not an upload: refused, nothing read.
    with pytest.raises(AppError):
        client.predict("/etc/passwd", None, 1, 8, api_name="/generate_report")
    # A hand-made FileData naming a server path (the client would have uploaded it) is refused too.
    body = {"data": [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}, None, 1, 8]}
    request = urllib.request.Request(url + "gradio_api/call/generate_report", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    event_id = json.load(urllib.request.urlopen(request, timeout=10))["event_id"]
    stream = urllib.request.urlopen(url + f"gradio_api/call/generate_report/{event_id}", timeout=30).read().decode()
    assert "event: error" in stream and "event: complete" not in stream
    report, _, _ = call(client, GOOD_PNG)
    assert report
