"""The Space under load, kept small: requests that arrive together are generated as one batch, each user
gets the report and the probabilities of their own study, a bad upload in the burst gets its own error,
a study that breaks the model fails alone, a lone request streams. No timing assertions: bursts are made
one batch by holding the batcher (``ReportBatcher.held``) until every request is in."""

from __future__ import annotations

import threading
import time

import pytest
import torch

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from space_helpers import EXAMPLES, bad_inputs, served_demo, space_report  # noqa: E402

from trrg.space import batching, loading  # noqa: E402
from trrg.space import evidence as shown  # noqa: E402

NEW_TOKENS = 20
WAIT_S = 120  # generous: a shared 2-core machine; only a hang reaches it


def studies() -> list[tuple]:
    """8 different studies: 7 frontal views alone and one with its lateral view (prompts of two lengths)."""
    frontals = sorted(EXAMPLES.glob("phantom_*_frontal.png")) + sorted(EXAMPLES.glob("nih_*.png"))
    pairs = [(path, None) for path in frontals]
    pairs.append((EXAMPLES / "phantom_normal_frontal.png", EXAMPLES / "phantom_normal_lateral.png"))
    assert len(pairs) == 8
    return pairs


def alone(model, processor, frontal, lateral, beams=1) -> tuple[str, list[float]]:
    """The report and probabilities of one study run by itself (a batcher of its own)."""
    perception, report = space_report(model, processor, frontal, lateral, beams=beams, tokens=NEW_TOKENS)
    return report.report, list(shown.probability_table(perception)["probability"])


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_burst_is_one_batch_each_user_gets_their_own_report_and_a_bad_upload_its_error(tiny_finetune_model, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    model, processor = tiny_finetune_model
    pairs = studies()
    expected = [alone(model, processor, *pair) for pair in pairs]
    assert len({tuple(probs) for _, probs in expected}) == len(pairs)  # the studies differ
    bad = next(path for path, fragment in bad_inputs(tmp_path).items() if fragment == "not an image")

    with served_demo(model, processor) as (url, demo):
        batcher = demo.trrg_batcher
        clients = [gradio_client.Client(url, verbose=False, download_files=False) for _ in range(len(pairs) + 1)]
        with batcher.held():  # every request is in before the batch starts
            jobs = [client.submit(handle_file(str(frontal)), None if lateral is None else handle_file(str(lateral)),
                                  1, NEW_TOKENS, api_name="/generate_report")
                    for client, (frontal, lateral) in zip(clients, pairs)]
            bad_job = clients[-1].submit(handle_file(str(bad)), None, 1, NEW_TOKENS, api_name="/generate_report")
            wait_until(lambda: batcher.pending() == len(pairs), "the good requests to reach the batcher")
            # The bad upload is refused with its own message before any batch runs.
            with pytest.raises(AppError, match="not an image") as error:
                bad_job.result(timeout=WAIT_S)
            assert "notes.png" in str(error.value)
        results = [job.result(timeout=WAIT_S) for job in jobs]
        # The sessions do not keep the components gradio built for the updates (forget_update_components).
        page = set(demo.blocks)
        wait_until(lambda: all(set(session.blocks_config.blocks) <= page
                               for session in list(demo.state_holder.session_data.values())),
                   "the sessions to drop the components of their updates")

    assert batcher.batch_sizes == {len(pairs): 1}  # one batch of 8, nothing run alone
    for (report, plot, clues, *_), (expected_report, expected_probs), (frontal, _) in zip(results, expected, pairs):
        assert report == expected_report and report, frontal.name
        probs = [row[1] for row in plot["data"]]
        assert probs == pytest.approx(expected_probs, abs=2e-4), frontal.name
        assert "Clues injected as *present*" in clues


def collect(batcher: batching.ReportBatcher, views: list, settings: dict) -> tuple[list[tuple], threading.Event]:
    """Submit one request straight to the batcher; its messages land in the returned list."""
    messages, finished = [], threading.Event()

    def post(message: tuple) -> None:
        messages.append(message)
        if message[0] in ("report", "error"):
            finished.set()

    batcher.submit(batching.ReportRequest(views, settings, post))
    return messages, finished


def test_a_study_that_breaks_the_model_fails_alone(tiny_finetune_model, monkeypatch):
    model, processor = tiny_finetune_model
    load = loading.image_module(processor).load_xray_image
    pairs = studies()[:3]
    good = [[load(frontal)] for frontal, _ in pairs]
    poison = [load(pairs[0][0]), load(pairs[0][0]).point(lambda _: 0)]  # the one two-view study; it "breaks" the model
    real_generate = model.generate

    def generate(**inputs):
        if bool((inputs["view_mask"].sum(dim=1) == 2).any()):
            raise RuntimeError("cannot write a report for a blank image")
        return real_generate(**inputs)

    monkeypatch.setattr(model, "generate", generate)
    batcher = batching.ReportBatcher(model, processor)
    settings = batching.generation_settings(1, NEW_TOKENS)
    with batcher.held():
        requests = [collect(batcher, views, settings) for views in good + [poison]]
    for _, finished in requests:
        assert finished.wait(WAIT_S)
    monkeypatch.setattr(model, "generate", real_generate)
    # The batch of 4 failed; run again one by one, the 3 good studies got their reports.
    assert batcher.batch_sizes == {4: 1, 1: 4}
    for (messages, _), (frontal, lateral) in zip(requests, pairs):
        assert [kind for kind, _ in messages][0] == "perceived"  # once, though the study ran twice
        assert [kind for kind, _ in messages].count("perceived") == 1
        assert messages[-1][0] == "report" and messages[-1][1].report == alone(model, processor, frontal, lateral)[0]
    kind, error = requests[-1][0][-1]
    assert kind == "error" and "blank image" in str(error)
    message = batching.generation_error(error).message
    assert "could not be generated for this study" in message and "RuntimeError" in message


def test_the_streamer_posts_the_growing_report(tiny_finetune_model):
    _, processor = tiny_finetune_model
    tokenizer, posted = processor.tokenizer, []
    streamer = batching.PostingStreamer(tokenizer, posted.append, interval_s=0.0)
    ids = tokenizer.encode("the heart size is normal . there is no pleural effusion .", add_special_tokens=False)
    streamer.put(torch.tensor([[tokenizer.bos_token_id, 7, 8]]))  # the prompt: skipped
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    texts = [text for kind, text in posted if kind == "text"]
    assert len(texts) > 5 and all(longer.startswith(shorter) for shorter, longer in zip(texts, texts[1:]))
    assert texts[-1] == tokenizer.decode(ids, skip_special_tokens=True).strip()
    # At most one message per interval: a fast model shows a few words at a time.
    slow = []
    streamer = batching.PostingStreamer(tokenizer, slow.append, interval_s=3600)
    streamer.put(torch.tensor([[tokenizer.bos_token_id]]))
    for token in ids:
        streamer.put(torch.tensor([token]))
    assert len(slow) == 1


def test_a_lone_request_streams_and_different_settings_are_not_batched_together(tiny_finetune_model, monkeypatch):
    model, processor = tiny_finetune_model
    load = loading.image_module(processor).load_xray_image
    frontal = EXAMPLES / "phantom_effusion_frontal.png"
    expected, expected_beams = alone(model, processor, frontal, None)[0], alone(model, processor, frontal, None, beams=2)[0]
    streamed, real_generate = [], model.generate

    def generate(**kwargs):
        streamed.append(kwargs.get("streamer") is not None)
        return real_generate(**kwargs)

    monkeypatch.setattr(model, "generate", generate)
    batcher = batching.ReportBatcher(model, processor, stream_interval_s=0.0)
    messages, finished = collect(batcher, [load(frontal)], batching.generation_settings(1, NEW_TOKENS))
    assert finished.wait(WAIT_S)
    kinds = [kind for kind, _ in messages]
    assert streamed == [True] and kinds[0] == "perceived" and messages[-1][1].report == expected
    assert set(kinds[1:-1]) <= {"text"}
    # Greedy and beam-search requests waiting together run as two batches, each with its own settings;
    # neither streams (a batch does not, beam search cannot).
    with batcher.held():
        greedy = [collect(batcher, [load(frontal)], batching.generation_settings(1, NEW_TOKENS)) for _ in range(2)]
        beams = collect(batcher, [load(frontal)], batching.generation_settings(2, NEW_TOKENS))
    for _, done in greedy + [beams]:
        assert done.wait(WAIT_S)
    assert batcher.batch_sizes == {1: 2, 2: 1} and streamed[1:] == [False, False]
    assert greedy[0][0][-1][1].report == greedy[1][0][-1][1].report == expected
    assert [kind for kind, _ in beams[0]] == ["perceived", "report"]
    assert beams[0][-1][1].report == expected_beams
