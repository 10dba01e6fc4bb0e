"""The README's screenshot of the upload form (docs/form.png), taken by a real browser.

The form is served by the real gunicorn with the session's trained test model, one example is
classified so the result shows, and the page is photographed. By default the picture goes to a
temporary folder so that running the tests leaves the checkout clean; to refresh the committed
one:

    UPDATE_SCREENSHOT=1 .venv/bin/python -m pytest tests/proof/test_form_screenshot.py
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from PIL import Image

from harness import ROOT
from harness.browser import CHROMIUM
from tests.proof.test_proof_browser import check_result

expect = pytest.importorskip("playwright.sync_api").expect

SCREENSHOT = ROOT / "docs" / "form.png"
DESKTOP = {"viewport": {"width": 900, "height": 700}}

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None,
                                 reason="Chromium is not installed (apt-get install chromium)")]


def screenshot_path(tmp_path: Path) -> Path:
    """docs/form.png when UPDATE_SCREENSHOT=1, else a file in this test's temporary folder."""
    return SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1" else tmp_path / "form.png"


def classify_an_example(page, classes) -> str:
    """Click the one-click examples in turn until the model names one right, and return the label
    shown. The tests' model is trained for one epoch and may get every example wrong; then the
    last answer is the one photographed."""
    examples = page.get_by_role("button", name=re.compile(r"^Classify example \d+"))
    assert examples.count() > 0, "the trained model has no examples/ beside it"
    for i in range(examples.count()):
        button = examples.nth(i)
        expected = re.search(r"\((.+)\)$", button.get_attribute("aria-label")).group(1)
        button.click()
        expect(page.locator("#result-filename")).to_have_text(button.get_attribute("value")
                                                               .split("/")[-1])
        label = check_result(page, classes)
        if label == expected:
            break
    return label


def test_form_screenshot(open_page, vocab, tmp_path):
    page = open_page(**DESKTOP)
    label = classify_an_example(page, vocab)

    path = screenshot_path(tmp_path)
    page.screenshot(path=str(path), full_page=True)

    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width == DESKTOP["viewport"]["width"] and height >= 400, image.size
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20, "the screenshot is (almost) one flat colour"
    assert label in page.title(), "the page the screenshot shows is the result page"
