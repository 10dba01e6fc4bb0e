"""The upload form in a real browser (Playwright driving Debian's Chromium) against a real gunicorn.

Screenshots go to test-artifacts/. Skipped only when Chromium is not installed (.ci/run
installs it, and fails when it cannot); Playwright's own browser download is not used.
"""
from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import requests

from harness.browser import CHROMIUM, SKIP_REASON
from harness.images import image_bytes
from tests.proof.conftest import ARTIFACTS

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2,
         "is_mobile": True, "has_touch": True}
TIMEOUT_MS = 20_000

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"), full_page=True)


def photo(tmp_path: Path, name: str = "photo.png") -> Path:
    path = tmp_path / name
    path.write_bytes(image_bytes("PNG", (96, 80), seed=3))
    return path


def submit(page, path: Path) -> None:
    page.get_by_label(re.compile("Choose a photo")).set_input_files(str(path))
    page.get_by_role("button", name="Classify", exact=True).click()


def text_file(tmp_path: Path) -> Path:
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list: eggs, milk\n")
    return notes


def check_result(page, vocab) -> str:
    result = page.locator("#result")
    result.wait_for(state="visible")
    label = page.locator("#result-label").inner_text().strip()
    assert label in vocab
    assert re.fullmatch(r"\d{1,3}\.\d%", page.locator("#result-confidence").inner_text().strip())
    bars = page.locator("#bars li")
    assert bars.count() == len(vocab), "one bar per class"
    names = [bars.nth(i).locator(".bar-label").inner_text().strip() for i in range(bars.count())]
    values = [float(bars.nth(i).locator(".bar-value").inner_text().strip().rstrip("%"))
              for i in range(bars.count())]
    assert sorted(names) == sorted(vocab)
    assert values == sorted(values, reverse=True), "bars sorted, highest first"
    assert names[0] == label
    assert page.locator("#error").is_hidden()
    return label


def test_upload_through_the_form(open_page, vocab, tmp_path):
    page = open_page()
    page.evaluate("window.__noReload = true")
    submit(page, photo(tmp_path))
    check_result(page, vocab)
    assert page.evaluate("window.__noReload === true"), "the page reloaded (JavaScript is on)"
    assert page.locator("#result-image").get_attribute("src")
    assert not page.errors, page.errors
    shot(page, "upload")


def predicted(server, data: bytes) -> dict:
    """What POST /predict answers for these bytes: the result the page must show for them."""
    r = requests.post(server.url + "/predict", files={"file": ("x", data)}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


SHOWN_IMAGE = """async () => {
    const response = await fetch(document.getElementById("result-image").src);
    return Array.from(new Uint8Array(await response.arrayBuffer()));
}"""


def check_result_is_for(page, vocab, server, data: bytes, filename: str) -> None:
    """The result shown is the one /predict gives for `data`, beside that very image."""
    expected = predicted(server, data)
    assert check_result(page, vocab) == expected["label"]
    assert page.locator("#result-confidence").inner_text().strip() == \
        f"{expected['confidence'] * 100:.1f}%"
    assert page.locator("#result-filename").inner_text().strip() == filename
    assert bytes(page.evaluate(SHOWN_IMAGE)) == data, "the result shows another image"


def test_one_click_example(open_page, vocab, proof_server):
    page = open_page()
    examples = page.get_by_role("button", name=re.compile(r"^Classify example \d+"))
    assert examples.count() >= 2, "the trained model ships one example per class"
    clicked = examples.nth(examples.count() - 1)  # not the first: the result must be its own
    name = clicked.get_attribute("value")
    image = requests.get(proof_server.url + clicked.get_attribute("data-src"), timeout=10)
    clicked.click()
    check_result_is_for(page, vocab, proof_server, image.content, name.rsplit("/", 1)[-1])
    assert not page.errors, page.errors
    shot(page, "example")


FILE_IN_PAGE = """([b64, name, type]) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, {type}));
    return transfer;
}"""


def test_drop_a_file_on_the_form(open_page, vocab, proof_server):
    data = image_bytes("PNG", (90, 70), seed=11)
    page = open_page()
    transfer = page.evaluate_handle(FILE_IN_PAGE, [base64.b64encode(data).decode(), "dropped.png",
                                                   "image/png"])
    page.dispatch_event("#drop-zone", "dragenter", {"dataTransfer": transfer})
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    check_result_is_for(page, vocab, proof_server, data, "dropped.png")
    assert page.evaluate("document.getElementById('file').files[0].name") == "dropped.png"
    assert not page.errors, page.errors
    shot(page, "drop")


def test_paste_an_image(open_page, vocab, proof_server):
    data = image_bytes("PNG", (80, 90), seed=12)
    page = open_page()
    transfer = page.evaluate_handle(FILE_IN_PAGE, [base64.b64encode(data).decode(), "pasted.png",
                                                   "image/png"])
    page.evaluate("""(transfer) => document.dispatchEvent(new ClipboardEvent("paste",
        {clipboardData: transfer, bubbles: true, cancelable: true}))""", transfer)
    check_result_is_for(page, vocab, proof_server, data, "pasted.png")
    assert not page.errors, page.errors
    shot(page, "paste")


def test_text_file_gives_a_friendly_error(open_page, tmp_path):
    page = open_page()
    submit(page, text_file(tmp_path))
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible")
    text = alert.inner_text()
    assert "Sorry" in text and len(text) > 20
    assert "Traceback" not in page.content() and '{"error"' not in text
    assert page.locator("#result").is_hidden()
    shot(page, "error")


def test_works_without_javascript(open_page, vocab, tmp_path):
    page = open_page(javascript=False)
    page.get_by_label(re.compile("Choose a photo")).set_input_files(str(photo(tmp_path)))
    with page.expect_navigation() as nav:
        page.get_by_role("button", name="Classify", exact=True).click()
    assert nav.value.status == 200 and nav.value.request.method == "POST"
    check_result(page, vocab)
    shot(page, "no-javascript")

    page.get_by_label(re.compile("Choose a photo")).set_input_files(str(text_file(tmp_path)))
    with page.expect_navigation() as nav:
        page.get_by_role("button", name="Classify", exact=True).click()
    assert nav.value.status == 400, "the form answers an error with the API's status"
    assert "Sorry" in page.get_by_role("alert").inner_text()
    shot(page, "no-javascript-error")


def test_phone_sized_viewport(open_page, vocab, tmp_path):
    page = open_page(**PHONE)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["viewport"]["width"], f"page scrolls sideways on a phone ({width}px)"
    button = page.get_by_role("button", name="Classify", exact=True)
    box = button.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["viewport"]["width"]
    assert box["height"] >= 32, "the button is too small to tap"
    # Phones offer their photo library for image/*; HEIC/AVIF are named since some pickers
    # filter them out of image/* (the whole list comes from classifier.image_files.FORMATS).
    accept = page.locator("#file").get_attribute("accept").split(",")
    assert accept[0] == "image/*" and {".heic", ".heif", ".avif"} <= set(accept)
    page.get_by_label(re.compile("Choose a photo")).set_input_files(str(photo(tmp_path)))
    button.tap()
    check_result(page, vocab)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["viewport"]["width"]
    shot(page, "phone")


def test_a_file_that_is_not_an_image_shows_no_broken_preview(open_page, tmp_path):
    """Choosing a non-image must not leave a broken-image icon (and its alt text) on the page."""
    page = open_page()
    submit(page, text_file(tmp_path))
    page.get_by_role("alert").wait_for(state="visible")
    broken = page.evaluate("""() => [...document.images].filter(
        im => im.checkVisibility() && im.complete && im.naturalWidth === 0
              && im.getAttribute('src')).map(im => im.id || im.alt)""")
    assert not broken, f"broken images shown: {broken}"
