"""The Space in a real browser (Debian chromium + Playwright): upload, stream, chart, error, concurrency.

Needs ``apt-get install -y chromium`` and the ``playwright`` Python package (never ``playwright install``).
Leaves a screenshot at test-artifacts/space.png.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from space_helpers import EXAMPLES, GOOD_PNG, bad_inputs, running_demo

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
    """What the page must show in the end: predict()'s last report with the page's default settings."""
    from trrg.space import app

    tokens = min(max(int(model.generation_config.max_new_tokens or 96), 16), 256)
    return list(app.predict(str(path), None, 1, tokens, model=model, processor=processor))[-1][0]


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


def wait_for_report(page, expected: str, timeout_ms: int = TIMEOUT_MS) -> str:
    box = page.get_by_label("Report", exact=True)
    try:
        page.wait_for_function("([el, text]) => el.value === text", arg=[box.element_handle(), expected],
                               timeout=timeout_ms)
    except Exception as error:  # say what the page showed instead
        raise AssertionError(f"report {box.input_value()!r} != {expected!r}; page text: {page.inner_text('body')[:600]!r}") from error
    return box.input_value()


def test_page_streams_a_report_shows_the_chart_and_errors(browser, served, tiny_finetune_model, tmp_path):
    expected = final_report(*tiny_finetune_model, GOOD_PNG)
    assert expected
    page = open_page(browser, served)
    page.get_by_text("Not for clinical use; not a medical device").wait_for(state="visible")
    page.get_by_text("synthetic phantom").first.wait_for(state="visible")

    upload_and_generate(page, GOOD_PNG)
    assert wait_for_report(page, expected) == expected
    chart = page.locator("#probabilities")
    chart.locator("canvas, svg").first.wait_for()
    assert chart.locator("canvas, svg").count() > 0
    page.get_by_text("Clues injected as").wait_for(state="visible")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
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
    # One request runs at a time (the queue's concurrency limit), so the last may wait for four others.
    answers = [wait_for_report(page, text, timeout_ms=3 * TIMEOUT_MS) for page, text in zip(pages, expected)]
    assert answers == expected and all(answers)
    for page in pages:
        page.close()
