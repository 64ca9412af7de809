"""The page (``build_demo``): uploads and settings on the left; on the right the out-of-distribution note,
the streamed report and its sentences, the probabilities next to the views overlaid with an observation's
evidence map, and the clues; example studies as thumbnails below.

Imports only gradio and PIL (never ``trrg``).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

import gradio as gr
from PIL import Image

if __package__:  # trrg.space, the package (`trrg space`)
    from . import batching, evidence as shown, loading
else:  # app.py run from its own folder (a Hugging Face Space)
    import batching
    import evidence as shown
    import loading

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
BEAMS_RANGE, NEW_TOKENS_RANGE = (1, 4), (16, 256)
CONCURRENCY_LIMIT = 2 * batching.MAX_BATCH_SIZE  # requests inside the app (one batch running, the next one forming)
QUEUE_SIZE = 64  # waiting behind those; more are refused at once ("Queue is full") instead of waiting minutes
# Each session keeps its last request's evidence (the letterboxed views, ~0.3-0.6 MB) for the dropdown:
EVIDENCE_TTL_S = 3600  # and a session's evidence an hour after its last report
# gradio's cache of uploads and served overlays (files on disk, ~1 MB per report) is emptied of files
# older than this every as often: without it the disk fills while the Space stays up.
CACHE_FILE_TTL_S = 3600
NO_SENTENCES = "The report's sentences appear here once it is written; choose one to see the evidence of what it states."


def example_rows() -> list[list]:
    """[frontal, lateral] pairs from ``examples/``: phantom studies first, then real NIH images."""
    rows = []
    for frontal in sorted(EXAMPLES_DIR.glob("phantom_*_frontal.png")) + sorted(EXAMPLES_DIR.glob("nih_*.png")):
        lateral = frontal.with_name(frontal.name.replace("_frontal", "_lateral"))
        rows.append([str(frontal), str(lateral) if lateral != frontal and lateral.exists() else None])
    return rows


def chart_update(evidence: dict, disease: str):
    """The bar chart with ``disease`` (the one whose map is shown) in its own colour."""
    return shown.probability_table(evidence, shown=disease)


def build_demo(model, processor, is_phantom: bool | None) -> gr.Blocks:
    """The page (see the module's docstring); ``demo.trrg_batcher`` is the ``ReportBatcher`` its requests
    go through (tests, benchmarks)."""
    generation = getattr(model, "generation_config", None)
    default_tokens = int(getattr(generation, "max_new_tokens", None) or 96)
    default_tokens = min(max(default_tokens, NEW_TOKENS_RANGE[0]), NEW_TOKENS_RANGE[1])
    names = list(model.config.disease_names)

    batcher = batching.ReportBatcher(model, processor)
    served = shown.ServedImages(Path(tempfile.mkdtemp(prefix="trrg-space-images-")))

    def served_views(views: tuple) -> tuple:
        """``evidence_views``' overlays as served files (see ``ServedImages``)."""
        frontal, lateral, caption = views
        if isinstance(frontal, Image.Image):
            frontal = served.path(frontal, shown.OVERLAY_FORMAT)
        if isinstance(lateral, dict) and isinstance(lateral.get("value"), Image.Image):
            lateral = {**lateral, "value": served.path(lateral["value"], shown.OVERLAY_FORMAT)}
        return frontal, lateral, caption

    def first_message(views, perception) -> tuple:
        """What a request shows as soon as its perception is done (drawn off the event loop): the chart,
        the clues, the overlays, caption and dropdown, the evidence state, the out-of-distribution note,
        and an empty sentence list."""
        evidence = shown.evidence_of(views, perception, model.config, processor)
        default = evidence["default"]
        table, clues = shown.probability_table(perception, shown=default), shown.clues_markdown(perception, model.config)
        choices = gr.update(choices=shown.disease_choices(evidence), value=default, interactive=True)
        note, visible = shown.distribution_note(perception)
        return (table, clues, *served_views(shown.evidence_views(evidence, default)), choices, evidence,
                gr.update(value=note, visible=visible), gr.update(choices=[], value=None, info=NO_SENTENCES))

    async def generate_report(frontal, lateral, num_beams, max_new_tokens, request: gr.Request = None):
        """First the chart, clues, overlays, dropdown, state and note with an empty report; then only the
        report, growing when it streams; last the report and its sentences. The generation is the
        batcher's, shared with the requests that arrived at the same time. A bad upload is refused here,
        before it reaches a batch."""
        views = await asyncio.to_thread(loading.load_views, frontal, lateral, processor)
        loop, inbox = asyncio.get_running_loop(), asyncio.Queue()

        def post(message: tuple) -> None:  # called in the worker thread
            with contextlib.suppress(RuntimeError):  # the event loop is gone (server closing)
                loop.call_soon_threadsafe(inbox.put_nowait, message)

        job = batcher.submit(batching.ReportRequest(views, batching.generation_settings(num_beams, max_new_tokens), post))
        first = None
        skip = gr.skip()
        try:
            while True:
                kind, payload = await inbox.get()
                if kind == "error":
                    raise batching.generation_error(payload)
                if kind == "perceived":
                    first = await asyncio.to_thread(first_message, views, payload)
                    yield "", *first
                elif kind == "text":
                    if inbox.empty():  # else a newer text (or the report) is already waiting
                        yield payload, *(skip,) * 9
                else:
                    table, clues, *_ = first
                    kept = {**first[6], "sentences": shown.sentence_rows(payload)}
                    sentences = gr.update(choices=shown.sentence_choices(kept["sentences"]), value=None,
                                          info="Choose a sentence to see the evidence of the observation it states.")
                    checked = clues + shown.verification_note(payload)
                    yield payload.report, table, checked, *(skip,) * 4, kept, skip, sentences
                    return
        finally:
            job.cancelled = True  # a page that left before its batch started is not generated
            forget_update_components(demo, request)

    def preview(path):  # a view's image shows only while it holds one
        image = loading.preview_view(path, processor)
        return gr.update(value=served.path(image, "png") if image is not None else None, visible=image is not None)

    def redraw(name, state, request: gr.Request = None):
        """The dropdown's choice: its overlays and caption, and the chart with it highlighted."""
        forget_update_components(demo, request)  # those of the previous redraw
        if not state or name not in state.get("names", []):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return *served_views(shown.evidence_views(state, name)), chart_update(state, name)

    def show_sentence(index, state, request: gr.Request = None):
        """A sentence chosen: the overlays, caption, dropdown and chart of the observation it states."""
        forget_update_components(demo, request)
        sentences = (state or {}).get("sentences", [])
        if index is None or not 0 <= int(index) < len(sentences):
            return (gr.skip(),) * 5
        sentence = sentences[int(index)]
        name = shown.sentence_observation(sentence, state)
        if name is None:
            caption = (f"Sentence: \u201c{sentence['text']}\u201d states none of the {len(state['names'])} "
                       "observations the model perceives: no evidence map to show.")
            return gr.skip(), gr.skip(), caption, gr.skip(), gr.skip()
        frontal, lateral, caption = served_views(shown.evidence_views(state, name, sentence))
        return frontal, lateral, caption, gr.update(value=name), chart_update(state, name)

    # Display-only events (decoding an upload, drawing an overlay) do not wait behind a generation.
    display = {"api_visibility": "private", "concurrency_id": "display", "concurrency_limit": 2,
               "show_progress": "minimal"}
    view_image = {"type": "pil", "format": "png", "interactive": False, "height": 260, "buttons": ["fullscreen"]}
    upload = {"file_types": None, "elem_classes": ["trrg-upload"]}  # any file: the content decides (DICOM by its header)
    with gr.Blocks(title="TRRG report generation", delete_cache=(CACHE_FILE_TTL_S, CACHE_FILE_TTL_S)) as demo:
        gr.Markdown(loading.banner(is_phantom, getattr(model.config, "trrg_training_data", None)), elem_id="banner")
        with gr.Row():
            with gr.Column(scale=1):
                frontal = gr.File(label="Frontal view (PNG, JPEG or DICOM)", elem_id="frontal", **upload)
                frontal_view = gr.Image(label="Frontal view", elem_id="frontal-view", visible=False, **view_image)
                lateral = gr.File(label="Lateral view (optional)", elem_id="lateral", **upload)
                lateral_view = gr.Image(label="Lateral view", elem_id="lateral-view", visible=False, **view_image)
                with gr.Accordion("Generation settings", open=False):
                    num_beams = gr.Slider(*BEAMS_RANGE, value=1, step=1, label="Beams (1 streams the report)")
                    max_new_tokens = gr.Slider(*NEW_TOKENS_RANGE, value=default_tokens, step=1, label="Maximum new tokens")
                button = gr.Button("Generate report", variant="primary")
            with gr.Column(scale=2):
                warning = gr.Markdown("", visible=False, elem_id="distribution-note")
                report = gr.Textbox(label="Report", lines=6, interactive=False, elem_id="report")
                sentences = gr.Radio([], value=None, type="value", label="Report, sentence by sentence",
                                     info=NO_SENTENCES, elem_id="sentences")
                with gr.Row():
                    chart = gr.BarPlot(
                        x="disease", y="probability", y_lim=[0, 1], sort=names, color="highlight",
                        color_map=shown.CHART_COLOURS, color_title="red: the evidence map shown",
                        x_label_angle=-45, height=360,
                        label="Zero-shot disease probabilities", elem_id="probabilities",
                    )
                    with gr.Column():
                        disease = gr.Dropdown(names, value=None, label="Evidence map of", interactive=False,
                                              elem_id="evidence-disease")
                        with gr.Row():
                            overlay_image = {**view_image, "height": 300, "format": shown.OVERLAY_FORMAT}
                            overlay = gr.Image(label="Frontal view + evidence", elem_id="overlay", **overlay_image)
                            overlay_lateral = gr.Image(label="Lateral view + evidence", elem_id="overlay-lateral",
                                                       visible=False, **overlay_image)
                        caption = gr.Markdown("The evidence map of a disease appears here after a report is generated.",
                                              elem_id="evidence-caption")
                clues = gr.Markdown("Disease clues appear here after a report is generated.", elem_id="clues")
        evidence = gr.State(None, time_to_live=EVIDENCE_TTL_S)
        gr.Examples(
            [[frontal_path, lateral_path, frontal_path, lateral_path] for frontal_path, lateral_path in example_rows()],
            inputs=[frontal, lateral, frontal_view, lateral_view], visible_columns=[2, 3],
            label="Examples (phantom studies, then NIH ChestX-ray14): click one to fill the views",
        )
        gr.Markdown(
            "Real examples: NIH Clinical Center ChestX-ray14 (Wang et al., CVPR 2017), "
            "https://nihcc.app.box.com/v/ChestXray-NIHCC; see examples/ATTRIBUTION.md."
        )
        frontal.change(preview, frontal, frontal_view, **display)
        lateral.change(preview, lateral, lateral_view, **display)
        button.click(generate_report, [frontal, lateral, num_beams, max_new_tokens],
                     [report, chart, clues, overlay, overlay_lateral, caption, disease, evidence, warning, sentences],
                     api_name="generate_report", concurrency_id="generate", concurrency_limit=CONCURRENCY_LIMIT)
        disease.input(redraw, [disease, evidence], [overlay, overlay_lateral, caption, chart], **display)
        sentences.input(show_sentence, [sentences, evidence], [overlay, overlay_lateral, caption, disease, chart],
                        **display)
    demo.trrg_batcher = batcher  # for tests and benchmarks
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)


def forget_update_components(demo: gr.Blocks, request: gr.Request | None) -> None:
    """Work around gradio 6 keeping, in the session's config, every component that an update creates
    (each ``gr.skip()`` and ``gr.update()`` output builds one, registered under a new id and never
    dropped): ~20 KB per request, without bound in a session that sends many. Drops the session's
    components that are not the page's own; the page's outputs stay updated under their own ids."""
    try:
        session = demo.state_holder.session_data.get(request.session_hash) if request is not None else None
        if session is None:
            return
        blocks = session.blocks_config.blocks
        for key in [key for key in blocks if key not in demo.blocks]:
            blocks.pop(key, None)
            session.config_values.pop(key, None)
    except (AttributeError, TypeError):  # another gradio: nothing to work around, or not this way
        return
