"""The Space in a real browser (Debian chromium + Playwright): upload (shown as an image), stream, chart,
evidence overlay and its dropdown, example thumbnails, error, concurrency; the report's sentences pointing
at their observation's evidence, an extension-less DICOM upload, the out-of-distribution note.

Needs ``apt-get install -y chromium`` and the ``playwright`` Python package (never ``playwright install``).
Leaves a screenshot in the test's tmp folder (its path is printed; run with -s) and at test-artifacts/space.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

import numpy as np

from space_helpers import EXAMPLES, GOOD_PNG, bad_inputs, running_demo, served_demo, space_report, write_dicom

pytest.importorskip("gradio")
from trrg.space import loading  # noqa: E402
from trrg.space import evidence as shown  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parents[1] / "test-artifacts" / "space.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 90_000  # generous: the CI machine has 2 shared cores

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent: apt-get install -y chromium"),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served(tiny_finetune_model):
    with running_demo(*tiny_finetune_model, is_phantom=True) as url:
        yield url


def final_report(model, processor, path) -> str:
    """What the page must show in the end: the Space's report with the page's default settings."""
    tokens = min(max(int(model.generation_config.max_new_tokens or 96), 16), 256)
    return space_report(model, processor, path, tokens=tokens)[1].report


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_role("button", name="Generate report").wait_for(state="visible")
    page.get_by_text("Not for clinical use; not a medical device").wait_for(state="visible")  # app mounted
    page.locator("#frontal input[type=file]").wait_for(state="attached")
    return page


def upload_and_generate(page, path) -> None:
    page.locator("#frontal input[type=file]").set_input_files(str(path))
    # The upload has landed when the component lists the file (long names are shortened with "…").
    page.locator("#frontal").get_by_text(Path(path).stem[:12]).first.wait_for()
    page.get_by_role("button", name="Generate report").click()


def loaded_image(page, selector: str):
    """The <img> in a component once the browser has decoded it (non-zero natural size)."""
    image = page.locator(f"{selector} img").first
    image.wait_for(state="visible")
    page.wait_for_function("el => el.complete && el.naturalWidth > 0 && el.naturalHeight > 0",
                           arg=image.element_handle())
    return image


def natural_size(image) -> tuple[int, int]:
    return tuple(image.evaluate("el => [el.naturalWidth, el.naturalHeight]"))


def choose_disease(page, name: str) -> None:
    """Pick a disease in the evidence dropdown, as a user does: open it, click the option."""
    page.locator("#evidence-disease input").click()
    page.get_by_role("option", name=name).first.click()


def wait_for_report(page, expected: str, timeout_ms: int = TIMEOUT_MS) -> str:
    box = page.get_by_label("Report", exact=True)
    try:
        page.wait_for_function("([el, text]) => el.value === text", arg=[box.element_handle(), expected],
                               timeout=timeout_ms)
    except Exception as error:  # say what the page showed instead: its start, and its end (toasts, errors)
        text = page.inner_text("body")
        raise AssertionError(f"report {box.input_value()!r} != {expected!r}; page text: {text[:600]!r} ... "
                             f"{text[-800:]!r}") from error
    return box.input_value()


def test_page_streams_a_report_shows_the_chart_and_errors(browser, served, tiny_finetune_model, tmp_path):
    expected = final_report(*tiny_finetune_model, GOOD_PNG)
    assert expected
    page = open_page(browser, served)
    page.get_by_text("Not for clinical use; not a medical device").wait_for(state="visible")
    page.get_by_text("synthetic phantom").first.wait_for(state="visible")

    upload_and_generate(page, GOOD_PNG)
    uploaded = loaded_image(page, "#frontal-view")  # the upload is shown as an image, not only a name
    assert natural_size(uploaded) == Image.open(GOOD_PNG).size
    assert wait_for_report(page, expected) == expected
    chart = page.locator("#probabilities")
    chart.locator("canvas, svg").first.wait_for()
    assert chart.locator("canvas, svg").count() > 0
    page.get_by_text("Clues injected as").wait_for(state="visible")

    # Next to the chart: the frontal view with the default disease's evidence map.
    overlay = loaded_image(page, "#overlay")
    side = max(tiny_finetune_model[1].image_processor.image_size, shown.OVERLAY_SIDE)
    assert natural_size(overlay) == (side, side) and overlay.is_visible() and uploaded.is_visible()
    assert not page.locator("#overlay-lateral").is_visible()  # no lateral view uploaded
    model, processor = tiny_finetune_model
    evidence = shown.evidence_of(loading.load_views(str(GOOD_PNG), None, processor),
                               space_report(model, processor, GOOD_PNG, tokens=8)[0], model.config, processor)
    dropdown = page.locator("#evidence-disease input")
    assert dropdown.input_value().startswith(evidence["default"])
    page.get_by_text(f"{evidence['default']}: probability").wait_for(state="visible")
    # Another disease: the overlay is redrawn (new src) and the report stays as it is (not regenerated).
    before = overlay.get_attribute("src")
    other = next(name for name in evidence["names"] if name != evidence["default"])
    choose_disease(page, other)
    page.wait_for_function("([el, src]) => el.getAttribute('src') !== src && el.complete && el.naturalWidth > 0",
                           arg=[overlay.element_handle(), before])
    assert dropdown.input_value().startswith(other) and overlay.get_attribute("src") != before
    page.get_by_text(f"{other}: probability").wait_for(state="visible")
    assert page.get_by_label("Report", exact=True).input_value() == expected

    screenshot = tmp_path / "space.png"
    page.screenshot(path=str(screenshot), full_page=True)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, SCREENSHOT)
    print(f"\nscreenshot: {screenshot} (copied to {SCREENSHOT})")
    page.close()

    not_image = next(path for path, fragment in bad_inputs(tmp_path).items() if fragment == "not an image")
    page = open_page(browser, served)
    upload_and_generate(page, not_image)
    page.get_by_text("not an image").first.wait_for(state="visible")
    assert "notes.png" in page.get_by_text("not an image").first.inner_text()
    page.close()


def test_five_pages_at_once_are_all_answered(browser, served, tiny_finetune_model):
    paths = [EXAMPLES / name for name in ("phantom_normal_frontal.png", "phantom_cardiomegaly_frontal.png",
                                          "phantom_effusion_frontal.png", "phantom_pneumothorax_frontal.png",
                                          "nih_00000001_000.png")]
    expected = [final_report(*tiny_finetune_model, path) for path in paths]
    pages = [open_page(browser, served) for _ in paths]
    for page, path in zip(pages, paths):
        upload_and_generate(page, path)
    # Requests that arrive together are generated as one batch (the app's ReportBatcher); each page
    # must still get the report of its own image.
    answers = [wait_for_report(page, text, timeout_ms=3 * TIMEOUT_MS) for page, text in zip(pages, expected)]
    assert answers == expected and all(answers)
    for page in pages:
        page.close()


def test_examples_are_thumbnails_that_fill_the_views(browser, served):
    page = open_page(browser, served)
    thumbnails = page.locator("table img, .gallery img")  # gr.Examples renders a table of image cells
    thumbnails.first.wait_for(state="visible")
    assert thumbnails.count() >= 7  # 7 frontal views and a lateral one
    assert thumbnails.first.evaluate("el => el.naturalWidth") > 0
    # The study with a lateral view: both files and both images are filled.
    page.locator("tr", has=page.locator("img")).nth(2).click()
    assert natural_size(loaded_image(page, "#frontal-view"))[0] > 0
    assert natural_size(loaded_image(page, "#lateral-view"))[0] > 0
    page.locator("#frontal").get_by_text("phantom_normal").first.wait_for()
    page.locator("#lateral").get_by_text("phantom_normal").first.wait_for()
    page.close()


# --- sentences, extension-less DICOM, the out-of-distribution note ----------------------------


class SteeredReporter:
    """The batcher's report pipeline, with the study's ``in_distribution`` set (what a model with
    training statistics decides; the tiny fixture has none) and, when given, the report's sentences
    replaced by sentences stating chosen observations (the tiny model's words are random)."""

    def __init__(self, reporter, in_distribution=None, sentences=None):
        self.reporter, self.in_distribution, self.sentences = reporter, in_distribution, sentences

    def __call__(self, studies, perception_callback=None, **kwargs):
        def perceived(perceptions):
            for perception in perceptions:
                perception.in_distribution = self.in_distribution
            if perception_callback is not None:
                perception_callback(perceptions)

        reports = self.reporter(studies, perception_callback=perceived, **kwargs)
        for report in reports if self.sentences else []:
            report.sentences = list(self.sentences)
        return reports


@pytest.fixture(scope="module")
def steered(tiny_finetune_model):
    """A demo of its own whose batcher's pipeline the tests steer (``SteeredReporter``)."""
    with served_demo(*tiny_finetune_model, is_phantom=True) as (url, demo):
        original = demo.trrg_batcher.reporter
        yield url, demo, original
        demo.trrg_batcher.reporter = original


def test_choosing_a_sentence_shows_the_evidence_of_the_observation_it_states(browser, steered, tiny_finetune_model):
    from trrg.modeling.pipeline_trrg import TRRGSentence

    url, demo, original = steered
    names = list(tiny_finetune_model[0].config.disease_names)
    stated = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax"]
    assert set(stated) <= set(names)
    sentences = [TRRGSentence(f"Sentence about {name.lower()}.", {name: "positive"}) for name in stated]
    sentences.append(TRRGSentence("The study is otherwise unremarkable.", {}))
    demo.trrg_batcher.reporter = SteeredReporter(original, True, sentences)
    page = open_page(browser, url)
    page.locator("#frontal input[type=file]").set_input_files(str(EXAMPLES / "phantom_normal_frontal.png"))
    page.locator("#frontal").get_by_text("phantom_norm").first.wait_for()
    page.locator("#lateral input[type=file]").set_input_files(str(EXAMPLES / "phantom_normal_lateral.png"))
    page.locator("#lateral").get_by_text("phantom_norm").first.wait_for()
    page.get_by_role("button", name="Generate report").click()
    listed = page.locator("#sentences")
    listed.get_by_text(sentences[0].text).wait_for(state="visible")  # the list comes with the finished report
    assert "Cardiomegaly: positive" in listed.inner_text()
    overlay = loaded_image(page, "#overlay")
    dropdown = page.locator("#evidence-disease input")
    caption = page.locator("#evidence-caption")
    shown_first = dropdown.input_value()
    for sentence, name in zip(sentences, stated):
        if shown_first.startswith(name):
            continue  # already shown: choose the others
        before = overlay.get_attribute("src")
        listed.get_by_text(sentence.text).click()
        page.get_by_text(f"states {name} (positive)").wait_for(state="visible")
        page.wait_for_function("([el, src]) => el.getAttribute('src') !== src && el.complete && el.naturalWidth > 0",
                               arg=[overlay.element_handle(), before])
        text = caption.inner_text()
        assert text.startswith(f"{name}: probability") and "strongest on the" in text, text
        assert dropdown.input_value().startswith(name)
    # A sentence that states nothing says so and leaves the overlay as it is.
    before = overlay.get_attribute("src")
    listed.get_by_text(sentences[-1].text).click()
    page.get_by_text("no evidence map to show").wait_for(state="visible")
    assert overlay.get_attribute("src") == before
    page.close()


def test_an_extensionless_dicom_upload_gets_a_report(browser, served, tiny_finetune_model, tmp_path):
    pixels = np.asarray(Image.open(GOOD_PNG), dtype=np.uint16) * 16  # 12-bit
    dicom = write_dicom(tmp_path / "IM000123", pixels)  # as PACS exports name them: no extension
    assert dicom.suffix == ""
    expected = final_report(*tiny_finetune_model, dicom)
    page = open_page(browser, served)
    upload_and_generate(page, dicom)
    assert natural_size(loaded_image(page, "#frontal-view")) == (pixels.shape[1], pixels.shape[0])
    assert wait_for_report(page, expected) == expected
    assert "Invalid file type" not in page.inner_text("body")
    page.close()


def test_the_out_of_distribution_note_follows_the_perception(browser, steered, tiny_finetune_model):
    url, demo, original = steered
    page = open_page(browser, url)
    page.locator("#frontal input[type=file]").set_input_files(str(GOOD_PNG))
    page.locator("#frontal").get_by_text(GOOD_PNG.stem[:12]).first.wait_for()
    note = page.locator("#distribution-note")
    expected = final_report(*tiny_finetune_model, GOOD_PNG)
    warning = "does not resemble the images this model was trained on"
    for in_distribution in (False, True, None, False):
        demo.trrg_batcher.reporter = SteeredReporter(original, in_distribution)
        page.get_by_label("Report", exact=True).evaluate("el => { el.value = ''; }")
        page.get_by_role("button", name="Generate report").click()
        wait_for_report(page, expected)
        if in_distribution is False:
            page.get_by_text(warning).wait_for(state="visible")
            assert "unreliable" in note.inner_text()
        elif in_distribution is None:
            page.get_by_text("cannot tell whether this image resembles").wait_for(state="visible")
            assert warning not in page.inner_text("body")
        else:
            note.wait_for(state="hidden")
            assert warning not in page.inner_text("body") and "cannot tell" not in page.inner_text("body")
    page.close()
