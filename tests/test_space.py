"""The Gradio Space: its generation (``ReportBatcher``, through the model's report pipeline), the evidence
overlays and the view previews, a served demo called with gradio_client, bad inputs, file access."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from space_helpers import (  # noqa: E402
    EXAMPLES,
    GOOD_PNG,
    bad_inputs,
    running_demo,
    space_messages,
    space_report,
    write_dicom,
)

from trrg.modeling.pipeline_trrg import TRRGStudyPerception  # noqa: E402
from trrg.space import app, batching, loading, ui  # noqa: E402
from trrg.space import evidence as shown  # noqa: E402

NEW_TOKENS = 20


def greedy_report(model, processor, paths, **settings) -> str:
    inputs = processor(images=[[loading.image_module(processor).load_xray_image(p) for p in paths]], return_tensors="pt")
    with torch.no_grad():
        sequences = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, **settings)
    return processor.batch_decode(sequences, prompt_length=inputs["input_ids"].shape[1])[0]


def pipeline_report(model, processor, paths, **settings) -> str:
    """What the report pipeline writes for the study (verified decoding and clue completion included):
    the one generation path the Space calls."""
    return model.report_pipeline(processor)([str(p) for p in paths], max_new_tokens=NEW_TOKENS, **settings).report


# --- the Space's generation -----------------------------------------------------------------


def test_a_lone_request_gets_its_perception_then_streams_the_greedy_report(tiny_finetune_model):
    model, processor = tiny_finetune_model
    views = loading.load_views(str(GOOD_PNG), None, processor)
    batcher = batching.ReportBatcher(model, processor, stream_interval_s=0.0)
    messages = space_messages(batcher, views, batching.generation_settings(1, NEW_TOKENS))
    kinds = [kind for kind, _ in messages]
    assert kinds[0] == "perceived" and kinds[-1] == "report" and "text" in kinds  # then word by word
    texts = [payload for kind, payload in messages if kind == "text"]
    assert all(longer.startswith(shorter) for shorter, longer in zip(texts, texts[1:]))
    assert messages[-1][1].report == pipeline_report(model, processor, [GOOD_PNG]) != ""
    assert pipeline_report(model, processor, [GOOD_PNG], verify=False) == greedy_report(model, processor, [GOOD_PNG])
    # what streamed is the writer's text as generated; the report shown at the end is its verified form
    assert texts[-1].strip() == pipeline_report(model, processor, [GOOD_PNG], verify=False).strip()
    table = shown.probability_table(messages[0][1])
    assert list(table["disease"]) == list(model.config.disease_names) and len(table) == 14
    inputs = processor(images=[views])
    expected = model.predict_diseases(inputs["pixel_values"], inputs["view_mask"])[0]
    assert torch.allclose(torch.tensor(table["probability"].to_numpy(), dtype=torch.float32), expected, atol=1e-3)


def test_beam_search_gives_the_beam_search_report_in_one_piece(tiny_finetune_model):
    model, processor = tiny_finetune_model
    frontal, lateral = EXAMPLES / "phantom_normal_frontal.png", EXAMPLES / "phantom_normal_lateral.png"
    views = loading.load_views(str(frontal), str(lateral), processor)
    messages = space_messages(batching.ReportBatcher(model, processor), views, batching.generation_settings(2, NEW_TOKENS))
    assert [kind for kind, _ in messages] == ["perceived", "report"]
    # the report pipeline's beam report (verified decoding and clue completion included), in one piece
    assert messages[-1][1].report == pipeline_report(model, processor, [frontal, lateral], num_beams=2)
    unverified = pipeline_report(model, processor, [frontal, lateral], num_beams=2, verify=False)
    assert unverified == greedy_report(model, processor, [frontal, lateral], num_beams=2)


def test_the_space_reads_dicom_and_jpeg(tiny_finetune_model, tmp_path):
    model, processor = tiny_finetune_model
    pixels = np.asarray(Image.open(GOOD_PNG), dtype=np.uint16) * 16  # 12-bit
    dicom = write_dicom(tmp_path / "study.dcm", pixels)
    jpeg = tmp_path / "study.jpg"
    Image.open(GOOD_PNG).convert("L").save(jpeg, quality=95)
    for path in (dicom, jpeg):
        perception, report = space_report(model, processor, path, tokens=8)
        assert len(perception.disease_probs) == 14 and isinstance(report.report, str)


def test_a_missing_frontal_view_is_refused(tiny_finetune_model):
    with pytest.raises(gr.Error, match="frontal view"):
        loading.load_views(None, None, tiny_finetune_model[1])


def test_bad_files_raise_gr_error_with_the_loader_message_and_the_upload_name(tiny_finetune_model, tmp_path):
    processor = tiny_finetune_model[1]
    for path, fragment in bad_inputs(tmp_path / "bad").items():
        with pytest.raises(gr.Error) as error:
            loading.load_views(str(path), None, processor)
        assert fragment in error.value.message and path.name in error.value.message
        assert str(tmp_path) not in error.value.message  # the server's folders are not shown


def test_clue_text_lists_the_decisions_with_each_diseases_threshold(tiny_finetune_model):
    config = tiny_finetune_model[0].config
    names = list(config.disease_names)
    probs = [0.9] + [0.1] * 8 + [0.25] + [0.1] * 3 + [0.6]
    thresholds = [0.5] * 9 + [0.2] + [0.5] * 4  # pneumothorax tuned low
    perception = TRRGStudyPerception(dict(zip(names, probs)), {n: p >= t for n, p, t in zip(names, probs, thresholds)},
                                     dict(zip(names, thresholds)))
    text = shown.clues_markdown(perception, config)
    assert "**No Finding**: 0.90" in text and "**Support Devices**: 0.60" in text
    assert "**Pneumothorax**: 0.25 (threshold 0.20)" in text and "Cardiomegaly" not in text
    assert "the other 11 are injected as *absent*" in text


def test_banner_states_intended_use_and_training_data():
    for is_phantom in (True, False, None):
        assert "Not for clinical use; not a medical device" in loading.banner(is_phantom)
    assert "synthetic phantom" in loading.banner(True) and "synthetic" not in loading.banner(False)
    assert "unknown" in loading.banner(None)
    config = type("Config", (), {})()
    assert loading.training_data_of(config) is None
    config.trrg_training_data = "phantom"
    assert loading.training_data_of(config) is True
    config.trrg_training_data = "mimic-cxr"
    assert loading.training_data_of(config) is False


def test_load_model_reads_a_hub_folder_with_remote_code(tiny_finetune_model, tmp_path, monkeypatch):
    from trrg.assembly.hub_folders import save_hub_folder

    model, processor = tiny_finetune_model
    save_hub_folder(model, processor, tmp_path / "model")
    loaded, loaded_processor = loading.load_model(str(tmp_path / "model"))
    assert type(loaded).__name__ == "TRRGForConditionalGeneration" and not loaded.training
    perception, report = space_report(loaded, loaded_processor, GOOD_PNG, tokens=8)
    local_perception, local_report = space_report(model, processor, GOOD_PNG, tokens=8)
    assert report.report == local_report.report
    # The remote code brings the evidence maps and the letterbox the overlays are drawn on.
    views = loading.load_views(str(GOOD_PNG), None, processor)
    evidence = shown.evidence_of(views, perception, loaded.config, loaded_processor)
    local = shown.evidence_of(views, local_perception, model.config, processor)
    assert evidence["maps"].shape == local["maps"].shape and np.allclose(evidence["maps"], local["maps"], atol=1e-5)
    assert evidence["views"][0].size == local["views"][0].size and evidence["default"] == local["default"]
    # Something that is not a report generator (no report pipeline, e.g. a stage-1 model) is refused.
    import transformers

    stage_one = SimpleNamespace(predict_diseases=loaded.predict_diseases)
    stage_one.eval = lambda: stage_one
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda *args, **kwargs: stage_one)
    with pytest.raises(SystemExit, match="not a TRRG report generator"):
        loading.load_model(str(tmp_path / "model"))


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
    demo = ui.build_demo(model, processor, True)
    kinds = {type(block).__name__ for block in demo.blocks.values()}
    assert {"File", "Button", "Textbox", "BarPlot", "Accordion", "Slider", "Dataset", "Image", "Dropdown", "State",
            "Radio", "Markdown"} <= kinds
    assert "Report" in [getattr(block, "label", None) for block in demo.blocks.values()]
    assert demo._queue.max_size == ui.QUEUE_SIZE and demo._queue.default_concurrency_limit == 1
    # Reports: many requests at once inside the app (the batcher batches them); previews and overlays: 2.
    [generate] = [fn for fn in demo.fns.values() if fn.api_name == "generate_report"]
    assert (generate.concurrency_id, generate.concurrency_limit) == ("generate", ui.CONCURRENCY_LIMIT)
    assert ui.CONCURRENCY_LIMIT >= batching.MAX_BATCH_SIZE and isinstance(demo.trrg_batcher, batching.ReportBatcher)
    files = [block for block in demo.blocks.values() if type(block).__name__ == "File"]
    assert len(files) == 2 and all(block.file_types is None for block in files)  # any file: the content decides
    # The examples show thumbnails: of the four example inputs (two files, two images) the images show.
    dataset = next(block for block in demo.blocks.values() if type(block).__name__ == "Dataset")
    assert [type(c).__name__ for c in dataset._components] == ["Image", "Image"]
    assert len(dataset.samples) == len(ui.example_rows()) == 7
    # Uploads and served overlays are deleted from gradio's cache after an hour, so the disk does not fill.
    assert demo.delete_cache == (ui.CACHE_FILE_TTL_S, ui.CACHE_FILE_TTL_S) and ui.CACHE_FILE_TTL_S <= 3600


# --- evidence overlays, view previews, the disease dropdown ---------------------------------


def redness(image: Image.Image) -> np.ndarray:
    rgb = np.asarray(image, dtype=np.int32)
    return rgb[..., 0] - rgb[..., 2]


@pytest.mark.parametrize("size", [(200, 200), (160, 120)])
@pytest.mark.parametrize("corner", [(0, 0), (0, 3), (3, 0), (3, 3)])
def test_overlay_is_hottest_where_the_map_peaks_and_keeps_the_displayed_size(size, corner):
    evidence = np.zeros((4, 4), dtype=np.float32)
    evidence[corner] = 1.5  # top-left, top-right, bottom-left, bottom-right patch
    gray = Image.new("L", size, 128)
    overlay = shown.evidence_overlay(gray, evidence)
    assert overlay.size == size and overlay.mode == "RGB"
    width, height = size
    y, x = np.unravel_index(np.argmax(redness(overlay)), (height, width))
    assert (y >= height / 2, x >= width / 2) == (corner[0] == 3, corner[1] == 3)
    # The coldest corner (opposite the peak) is left as it was: the radiograph shows through.
    far = (height - 1 - y, width - 1 - x)
    assert tuple(np.asarray(overlay)[far]) == (128, 128, 128)
    # A numpy image gives the same overlay as the PIL image.
    assert np.array_equal(np.asarray(shown.evidence_overlay(np.asarray(gray), evidence)), np.asarray(overlay))


def test_overlay_of_a_flat_map_or_a_shared_range():
    gray = Image.new("L", (64, 64), 90)
    flat = shown.evidence_overlay(gray, np.full((4, 4), 0.3, dtype=np.float32))
    assert np.array_equal(np.asarray(flat), np.asarray(gray.convert("RGB")))
    evidence = np.zeros((4, 4), dtype=np.float32)
    evidence[1, 1] = 0.5
    def tint(image):  # how far the overlay moved the pixels from the gray radiograph
        return np.abs(np.asarray(image, dtype=np.int32) - 90).sum(axis=-1).max()

    own, shared = shown.evidence_overlay(gray, evidence), shown.evidence_overlay(gray, evidence, value_range=(0.0, 1.0))
    assert 0 < tint(shared) < tint(own)  # half-way up a wider range: less opaque
    assert redness(own).max() > 0 and redness(shared).max() <= 0  # and not red


def test_a_dicom_upload_is_shown_as_a_png_image(tiny_finetune_model, tmp_path):
    _, processor = tiny_finetune_model
    rows, columns = 40, 56
    pixels = (np.arange(rows * columns).reshape(rows, columns) % 4096).astype(np.uint16)  # 12-bit ramp
    dicom = write_dicom(tmp_path / "upload.dcm", pixels)
    image = loading.preview_view(str(dicom), processor)
    assert isinstance(image, Image.Image) and image.mode == "L" and image.size == (columns, rows)
    assert np.array_equal(np.asarray(image), np.asarray(loading.image_module(processor).load_xray_image(dicom)))
    shown = gr.Image(type="pil", format="png").postprocess(image)  # what the page's gr.Image serves
    assert shown.path.endswith(".png") and Image.open(shown.path).format == "PNG"
    assert Image.open(shown.path).size == (columns, rows)
    # A big upload is shown downscaled; no file shows nothing; a bad file warns and shows nothing.
    big = tmp_path / "big.png"
    Image.new("L", (2000, 1000), 40).save(big)
    assert loading.preview_view(str(big), processor).size == (loading.PREVIEW_SIDE, loading.PREVIEW_SIDE // 2)
    assert loading.preview_view(None, processor) is None
    bad = next(path for path, fragment in bad_inputs(tmp_path / "bad").items() if fragment == "not an image")
    with pytest.warns(UserWarning, match="not an image"):
        assert loading.preview_view(str(bad), processor) is None


def test_the_dropdown_defaults_to_the_most_probable_present_clue():
    names = ["A", "B", "C", "D"]
    assert shown.default_disease([0.9, 0.6, 0.7, 0.2], [False, True, True, False], names) == "C"
    assert shown.default_disease([0.9, 0.6, 0.7, 0.2], [False] * 4, names) == "A"  # none present


def test_the_evidence_keeps_the_maps_and_chooses_the_default_disease(tiny_finetune_model):
    model, processor = tiny_finetune_model
    perception, _ = space_report(model, processor, GOOD_PNG, tokens=8)
    views = loading.load_views(str(GOOD_PNG), None, processor)
    evidence = shown.evidence_of(views, perception, model.config, processor)
    inputs = processor(images=[views], return_tensors="pt")
    clues = model.predict_clues(inputs["pixel_values"], inputs["view_mask"], return_maps=True)
    probs, present = clues["disease_probs"][0], clues["clue_states"][0].bool()
    assert present.any()  # the fixture's prompt bank makes some clues present
    expected = max(torch.nonzero(present).flatten().tolist(), key=lambda i: float(probs[i]))
    assert evidence["default"] == model.config.disease_names[expected]
    # The overlays are drawn from the attribution maps, on a finer grid than the 4 x 4 patch grid.
    attribution = model.attribution_maps(inputs["pixel_values"], inputs["view_mask"])[0, :1].numpy()
    assert evidence["maps_kind"] == "attribution" and evidence["maps"].shape == attribution.shape
    assert attribution.shape[:2] == (1, 14) and attribution.shape[-1] > clues["evidence_maps"].shape[-1]
    assert np.allclose(evidence["maps"], attribution, atol=1e-6)
    side = max(processor.image_processor.image_size, shown.OVERLAY_SIDE)
    assert evidence["views"][0].size == (side, side)  # the letterboxed square the model saw, enlarged
    labels = dict((value, label) for label, value in shown.disease_choices(evidence))
    assert labels[evidence["default"]].endswith(", present)")
    # Without clue injection nothing is "present": the most probable disease is shown first.
    config = model.config.__class__.from_dict(model.config.to_dict())
    config.clue_config.use_clue_injection = False
    evidence = shown.evidence_of(views, perception, config, processor)
    assert evidence["default"] == model.config.disease_names[int(probs.argmax())] and not any(evidence["present"])


def test_changing_the_dropdown_redraws_the_overlays_without_the_model(tiny_finetune_model, monkeypatch):
    model, processor = tiny_finetune_model
    frontal, lateral = EXAMPLES / "phantom_normal_frontal.png", EXAMPLES / "phantom_normal_lateral.png"
    both, one = loading.load_views(str(frontal), str(lateral), processor), loading.load_views(str(frontal), None, processor)
    evidence = shown.evidence_of(both, space_report(model, processor, frontal, lateral, tokens=8)[0], model.config, processor)
    single = shown.evidence_of(one, space_report(model, processor, frontal, tokens=8)[0], model.config, processor)
    demo = ui.build_demo(model, processor, True)
    dropdown = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "evidence-disease")
    [listener] = [fn for fn in demo.fns.values() if (dropdown._id, "input") in fn.targets]
    assert [getattr(block, "elem_id", None) for block in listener.outputs] == ["overlay", "overlay-lateral",
                                                                               "evidence-caption", "probabilities"]

    def no_model(*args, **kwargs):
        raise AssertionError("the dropdown must not run the model")

    for method in ("generate", "predict_clues", "predict_diseases", "forward"):
        monkeypatch.setattr(model, method, no_model)
    default, other = evidence["default"], next(name for name in evidence["names"] if name != evidence["default"])
    first, first_lateral, first_caption, first_chart = listener.fn(default, evidence)  # served as files (ServedImages)
    second, second_lateral, second_caption, second_chart = listener.fn(other, evidence)
    # the chart highlights the disease whose map is shown
    assert list(first_chart.loc[first_chart["highlight"] == shown.SHOWN, "disease"]) == [default]
    assert list(second_chart.loc[second_chart["highlight"] == shown.SHOWN, "disease"]) == [other]
    first, second = Image.open(first), Image.open(second)
    assert first.format == second.format == shown.OVERLAY_FORMAT.upper()
    assert first.size == second.size == evidence["views"][0].size
    assert not np.array_equal(np.asarray(first), np.asarray(second))
    assert second_lateral["visible"] and Image.open(second_lateral["value"]).size == evidence["views"][1].size
    assert not np.array_equal(np.asarray(Image.open(first_lateral["value"])), np.asarray(Image.open(second_lateral["value"])))
    assert first_caption.startswith(f"**{default}**") and second_caption.startswith(f"**{other}**")
    # One view: the lateral overlay hides. Nothing generated yet: nothing changes.
    overlay, hidden, _, _ = listener.fn(other, single)
    assert Image.open(overlay).size == single["views"][0].size
    assert hidden == {"__type__": "update", "value": None, "visible": False}
    assert all(output == gr.skip() for output in listener.fn(default, None))


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
    report, plot, clues, *_ = call(client, GOOD_PNG)
    assert report == pipeline_report(*tiny_finetune_model, [GOOD_PNG]) and report.strip()
    probs = probabilities_of(plot)
    assert list(probs) == list(tiny_finetune_model[0].config.disease_names)
    assert all(0.0 <= p <= 1.0 for p in probs.values())
    assert "Clues injected as *present*" in clues


def test_served_demo_sends_the_overlay_and_the_dropdown_with_the_probabilities(served, tiny_finetune_model):
    from gradio_client import handle_file

    _, client = served
    frontal, lateral = EXAMPLES / "phantom_normal_frontal.png", EXAMPLES / "phantom_normal_lateral.png"
    job = client.submit(handle_file(str(frontal)), handle_file(str(lateral)), 1, NEW_TOKENS, api_name="/generate_report")
    job.result()
    report, plot, _, overlay, overlay_lateral, caption, dropdown, note, sentences = job.outputs()[0]  # then the report grows
    assert report == "" and len(plot["data"]) == 14
    side = max(tiny_finetune_model[1].image_processor.image_size, shown.OVERLAY_SIDE)
    assert Image.open(overlay).size == (side, side) and Image.open(overlay).mode == "RGB"
    assert overlay_lateral["visible"] and Image.open(overlay_lateral["value"]).size == (side, side)
    names = list(tiny_finetune_model[0].config.disease_names)
    assert dropdown["value"] in names and [value for _, value in dropdown["choices"]] == names
    assert caption.startswith(f"**{dropdown['value']}**") and "one scale for both views" in caption


def test_served_demo_refuses_bad_files_and_keeps_serving(served, tmp_path):
    from gradio_client.exceptions import AppError

    _, client = served
    for path, fragment in bad_inputs(tmp_path).items():
        with pytest.raises(AppError, match=fragment):
            call(client, path)
    report, plot, *_ = call(client, GOOD_PNG)
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
    report, *_ = call(client, GOOD_PNG)
    assert report


def test_served_images_are_written_once_whole_and_swept(tmp_path):
    import os
    import threading

    served = shown.ServedImages(tmp_path / "served", keep_s=60)
    image = Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))
    first = served.path(image, "png")
    inode = os.stat(first).st_ino
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(served.path(image, "png"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # the same image is one file, never rewritten (gradio's own cache write truncates it under a reader)
    assert set(paths) == {first} and os.stat(first).st_ino == inode
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(image))
    assert [p.name for p in (tmp_path / "served").iterdir()] == [os.path.basename(first)]  # no staging left over
    os.utime(first, (0, 0))  # older than keep_s
    served._last_sweep -= 61
    served.path(Image.new("L", (8, 8)), "jpeg")
    assert not os.path.exists(first) and len(list((tmp_path / "served").iterdir())) == 1


def test_the_space_folder_runs_as_a_hub_space_without_trrg(tmp_path):
    """A Hugging Face Space runs app.py from the uploaded folder itself: its modules import one another
    by file, and nothing of ``trrg`` is imported (the model's remote code brings the image loading)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    folder = tmp_path / "space-repo"
    folder.mkdir()
    for module in Path(app.__file__).parent.glob("*.py"):
        if module.name != "__init__.py":
            shutil.copy(module, folder / module.name)
    code = ("import runpy, sys; sys.argv = ['app.py', '--help']\n"
            "try:\n    runpy.run_path('app.py', run_name='__main__')\nexcept SystemExit as end:\n    assert end.code == 0\n"
            "assert not [name for name in sys.modules if name == 'trrg' or name.startswith('trrg.')], 'trrg imported'\n"
            "print('modules:', sorted(name for name in ('loading', 'batching', 'evidence', 'ui') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "PYTHONPATH": "", "GRADIO_ANALYTICS_ENABLED": "False"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "TRRG_MODEL" in result.stdout and "modules: ['batching', 'evidence', 'loading', 'ui']" in result.stdout


def test_the_out_of_distribution_note_is_worded_for_a_clinician():
    unfamiliar = SimpleNamespace(in_distribution=False, familiarity=2.314)
    text, visible = shown.distribution_note(unfamiliar)
    assert visible and "does not resemble the images this model was trained on" in text
    assert "2.31" in text and "unreliable" in text
    assert shown.distribution_note(SimpleNamespace(in_distribution=True, familiarity=0.5)) == ("", False)
    quiet, visible = shown.distribution_note(SimpleNamespace(in_distribution=None, familiarity=None))
    assert visible and "cannot tell" in quiet and "does not resemble" not in quiet
