"""Serving many users: the ``ReportBatcher`` generates the requests that arrive together as one batch
through the model's report pipeline (its remote code's ``TRRGReportPipeline``), in one worker thread; a
lone greedy request streams its report (``PostingStreamer``).

Imports only gradio and transformers (never ``trrg``).
"""

from __future__ import annotations

import contextlib
import html
import inspect
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import gradio as gr
from transformers import TextStreamer

# Serving (measured with benchmarks/space_load.py; see README.md, "Many users at once"):
MAX_BATCH_SIZE = 32  # studies generated together; throughput still grows up to here, one batch stays short
BATCH_WINDOW_S = 0.05  # after a request arrives, the worker waits this long for others of the same burst
STREAM_INTERVAL_S = 0.05  # a streamed report is sent at most 20 times a second (each message costs the server)
LOG = logging.getLogger("trrg.space")  # INFO: one line per batch (size, settings, seconds)


def generation_settings(num_beams, max_new_tokens) -> dict:
    """``generate()`` keyword arguments of the page's settings (greedy or beam search, no sampling)."""
    return {"num_beams": int(num_beams), "max_new_tokens": int(max_new_tokens), "do_sample": False}


@dataclass(eq=False)
class ReportRequest:
    """One study waiting for its report: its decoded views, its ``generate()`` settings, and ``post``,
    called from the worker thread with each message for the request (see ``ReportBatcher``)."""

    views: list
    settings: dict
    post: Callable[[tuple], None]
    cancelled: bool = False  # set when the page went away: a request still waiting is dropped
    perceived: bool = field(default=False, repr=False)


class ReportBatcher:
    """Generates the reports of many users in batches, in one worker thread.

    ``submit()`` queues a request. The worker takes the oldest, waits ``window_s`` for others of the same
    burst, and runs up to ``max_batch_size`` waiting requests with the same settings as one batch through
    the model's report pipeline: the processor pads the prompts on the left (attention mask 0 on the
    padding) and stacks the views (``view_mask``), so each row gets the report it would get alone. Each
    request is sent ``("perceived", perception)`` (its ``TRRGStudyPerception``, evidence maps included) as
    soon as the batch's perception is done, ``("text", report_so_far)`` while it streams (a lone greedy
    request: ``generate()`` with a streamer), and last ``("report", report)`` (its ``TRRGReport``) or
    ``("error", exception)``. A batch that raises is run again one request at a time, so a study that
    breaks the model fails alone. The worker exits after ``idle_s`` without requests and starts again
    with the next one.
    """

    def __init__(self, model, processor, max_batch_size: int | None = None, window_s: float | None = None,
                 idle_s: float = 30.0, stream_interval_s: float | None = None):
        self.model, self.processor, self.idle_s = model, processor, idle_s
        self.reporter = model.report_pipeline(processor)
        # The overlays are drawn from the attribution maps (the backbone's finest grid); a model folder whose
        # remote code predates them gives its patch-grid evidence maps instead.
        fine = "return_attribution_maps" in inspect.signature(self.reporter._sanitize_parameters).parameters
        self.maps_request = {"return_attribution_maps" if fine else "return_evidence_maps": True}
        self.max_batch_size = MAX_BATCH_SIZE if max_batch_size is None else max_batch_size
        self.window_s = BATCH_WINDOW_S if window_s is None else window_s
        self.stream_interval_s = STREAM_INTERVAL_S if stream_interval_s is None else stream_interval_s
        self.batch_sizes: Counter[int] = Counter()  # batch size -> batches run (tests, benchmarks)
        self._pending: list[ReportRequest] = []
        self._held = 0
        self._worker: threading.Thread | None = None
        self._condition = threading.Condition()

    def submit(self, request: ReportRequest) -> ReportRequest:
        with self._condition:
            self._pending.append(request)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="trrg-report-batcher", daemon=True)
                self._worker.start()
            self._condition.notify_all()
        return request

    def pending(self) -> int:
        """Requests waiting for a batch."""
        with self._condition:
            return sum(not request.cancelled for request in self._pending)

    @contextlib.contextmanager
    def held(self):
        """No batch starts while held; requests collect and start together afterwards (tests use this
        to make a burst of requests one batch, whatever the timing)."""
        with self._condition:
            self._held += 1
        try:
            yield self
        finally:
            with self._condition:
                self._held -= 1
                self._condition.notify_all()

    # -- the worker thread -----------------------------------------------------------------------
    def _work(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self._run(batch)
        finally:  # an unexpected end too: the next submit() starts a new worker
            with self._condition:
                if self._worker is threading.current_thread():
                    self._worker = None

    def _ready(self) -> bool:
        self._pending = [request for request in self._pending if not request.cancelled]
        return bool(self._pending) and not self._held

    def _next_batch(self) -> list[ReportRequest] | None:
        with self._condition:
            while True:
                while not self._ready():
                    if not self._condition.wait(self.idle_s) and not self._pending:
                        self._worker = None  # idle: the next submit() starts a new worker
                        return None
                deadline = time.monotonic() + self.window_s  # the rest of a burst is arriving
                while len(self._pending) < self.max_batch_size and (left := deadline - time.monotonic()) > 0:
                    self._condition.wait(left)
                if self._ready():
                    settings = self._pending[0].settings
                    batch = [request for request in self._pending if request.settings == settings]
                    batch = batch[: self.max_batch_size]
                    self._pending = [request for request in self._pending if request not in batch]
                    return batch

    def _run(self, batch: list[ReportRequest]) -> None:
        try:
            self._generate(batch)
        except Exception as error:  # noqa: BLE001 - reported to the request(s), the worker goes on
            if len(batch) == 1:
                batch[0].post(("error", error))
            else:  # one at a time: only the study that breaks the model fails
                for request in batch:
                    self._run([request])

    def _generate(self, batch: list[ReportRequest]) -> None:
        self.batch_sizes[len(batch)] += 1
        start = time.perf_counter()

        def perceived(perceptions: list) -> None:  # before the reports are written: the page shows it at once
            for request, perception in zip(batch, perceptions):
                if not request.perceived:
                    request.perceived = True
                    request.post(("perceived", perception))

        settings = dict(batch[0].settings)
        if len(batch) == 1 and settings["num_beams"] == 1:  # alone: the report streams
            settings["streamer"] = PostingStreamer(self.processor.tokenizer, batch[0].post, self.stream_interval_s)
        reports = self.reporter([request.views for request in batch], batch_size=len(batch), **self.maps_request,
                                perception_callback=perceived, **settings)
        for request, report in zip(batch, reports):
            request.post(("report", report))
        LOG.info("batch of %d (%s): %.2f s, %d waiting", len(batch), batch[0].settings, time.perf_counter() - start,
                 self.pending())


class PostingStreamer(TextStreamer):
    """Posts ``("text", report_so_far)`` as a lone request's report is decoded: each new word, but at most
    once per ``interval_s`` (a model faster than that shows a few words at a time; the whole report
    follows as ``("report", ...)`` anyway)."""

    def __init__(self, tokenizer, post: Callable[[tuple], None], interval_s: float = STREAM_INTERVAL_S):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.post, self.interval_s, self.text, self.last_post = post, interval_s, "", float("-inf")

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text += text
        now = time.monotonic()
        if text.strip() and now - self.last_post >= self.interval_s:
            self.last_post = now
            self.post(("text", self.text.strip()))


def generation_error(error: BaseException) -> gr.Error:
    """What the page shows when the model failed on a study (a bad upload is refused before)."""
    if isinstance(error, gr.Error):
        return error
    message = f"The report could not be generated for this study ({type(error).__name__}: {error})."
    return gr.Error(html.escape(message), duration=None)


