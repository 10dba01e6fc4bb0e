"""The not-sure state, the explanation toggle and the model card in a real browser.

Playwright drives Debian's Chromium (`apt-get install chromium`; Playwright's own browser
download is not used) against the app served in this process by werkzeug. With
JavaScript on the page asks /predict; with it off the form posts to / and the server
renders the same result.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.browser import CHROMIUM, SKIP_REASON, page_opener
from harness.images import encode, photo
from harness.thread_server import served_in_thread

TIMEOUT_MS = 30_000  # generous: a loaded 2-core machine, a Grad-CAM per explained request

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)]


@pytest.fixture(scope="module")
def server_url(make_app):
    """The form of a server that flags every answer as not sure (UNSURE_THRESHOLD=1)."""
    with served_in_thread(make_app(UNSURE_THRESHOLD="1")) as url:
        yield url


@pytest.fixture
def open_page(playwright, server_url):
    """open_page(javascript) -> the form in a fresh browser; console errors on page.errors."""
    with page_opener(playwright, server_url, TIMEOUT_MS) as open_:
        yield open_


@pytest.fixture
def image_file(tmp_path) -> Path:
    path = tmp_path / "holiday.png"
    path.write_bytes(encode(photo(seed=4)))
    return path


def classify(page, image_file, explain: bool = False) -> None:
    page.set_input_files("#file", str(image_file))
    if explain:
        page.check("#explain")
    page.click("#submit")
    page.locator("#result").wait_for(state="visible")


def test_not_sure_is_shown_and_styled_apart(open_page, image_file):
    page = open_page()
    classify(page, image_file)
    note = page.locator("#result-unsure")
    assert note.is_visible() and note.inner_text().strip() == "Not sure — closest match:"
    assert "unsure" in page.locator("#result").get_attribute("class").split()
    label = page.locator("#result-label").inner_text().strip()
    assert label in ("blue", "green", "red")
    assert page.locator("#status").inner_text().startswith("Not sure — closest match: " + label)
    # Styled differently from a sure answer: an amber border on the result.
    border = page.locator("#result").evaluate("e => getComputedStyle(e).borderLeftStyle")
    assert border == "solid"
    assert page.locator("#explanation").is_hidden()
    assert page.errors == []


def test_explanation_toggle_shows_the_heatmap(open_page, image_file):
    page = open_page()
    classify(page, image_file, explain=True)
    figure = page.locator("#explanation")
    figure.wait_for(state="visible")
    image = page.locator("#explanation-image")
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    assert image.evaluate("img => img.complete && img.naturalWidth") == 32  # as the model saw it
    assert page.locator("#explanation-label").inner_text() == \
        page.locator("#result-label").inner_text().strip()
    # Unticked, the next answer comes without one.
    page.uncheck("#explain")
    page.click("#submit")
    page.wait_for_function("document.getElementById('explanation').hidden")
    assert page.errors == []


def test_model_card_is_on_the_page(open_page):
    page = open_page()
    card = page.locator("#model-card")
    assert card.is_visible()
    text = card.inner_text()
    for term in ("Classes", "Validation accuracy", "Test accuracy", "Training images",
                 "Created", "Architecture", "Input size", "Not-sure threshold"):
        assert term in text, term
    assert "blue, green, red" in text and "resnet18" in text and "100.0% (from UNSURE_THRESHOLD)" \
        in text
    assert page.errors == []


def test_result_page_without_javascript(open_page, image_file):
    page = open_page(javascript=False)
    classify(page, image_file, explain=True)
    assert page.url.endswith("/")  # the form posted to the server, which drew the result
    assert page.locator("#result-unsure").is_visible()
    assert page.locator("#result-label").inner_text().strip() in ("blue", "green", "red")
    assert page.locator("#explanation").is_visible()
    assert page.locator("#explanation-image").evaluate("img => img.naturalWidth") == 32
    assert page.title().startswith("Not sure: ")
    assert page.locator("#model-card").is_visible()
