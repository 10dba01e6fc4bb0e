"""/review in a real browser against a real gunicorn: sign in with the key, label a queued
image with a key press (it lands in FEEDBACK_DIR under that class), discard another (gone);
and the same without JavaScript through the plain forms."""
from __future__ import annotations

import os
import time

import pytest
import requests

from harness import ROOT
from harness.browser import CHROMIUM, SKIP_REASON, page_opener
from harness.images import encode, photo
from harness.servers import GunicornServer

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)]
KEY = "browser-review-key"
SCREENSHOT = ROOT / "docs" / "review.png"


@pytest.fixture(scope="module")
def review_server(notebook_export, tmp_path_factory):
    root = tmp_path_factory.mktemp("review-e2e")
    server = GunicornServer(notebook_export, env={
        "REVIEW_DIR": str(root / "review"), "FEEDBACK_DIR": str(root / "fb"), "API_KEY": KEY,
        "UNSURE_THRESHOLD": "1", "REVIEW_SAMPLE": "0"}).start()
    server.review_dir, server.feedback_dir = root / "review", root / "fb"
    yield server
    server.stop()


def queue_images(server, *seeds) -> set[str]:
    """Classify these photos (every answer is "not sure"); the ids queued, once written."""
    before = {p.stem for p in server.review_dir.glob("*.json")}
    for seed in seeds:
        r = requests.post(server.url + "/predict", data=encode(photo(seed=seed), "JPEG"),
                          headers={"Content-Type": "image/jpeg",
                                   "Authorization": f"Bearer {KEY}"}, timeout=30)
        assert r.status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ids = {p.stem for p in server.review_dir.glob("*.json")} - before
        if len(ids) == len(seeds):
            return ids
        time.sleep(0.05)
    raise AssertionError("the images were not queued")


def wait_for(condition, what: str):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(what)


def sign_in(page, url):
    page.goto(url + "/review")
    page.get_by_label("This server's API key").fill(KEY)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#review-image").wait_for(state="visible")
    # Without JavaScript the sign-in is a page load: the image can be laid out before the
    # stylesheet arrives (CI measured a 21 px button once); "load" waits for the stylesheet.
    page.wait_for_load_state("load")


@pytest.fixture
def open_page(playwright, review_server):
    with page_opener(playwright, review_server.url, 30_000) as open_:
        yield open_


def test_label_with_a_key_and_discard(open_page, review_server, tmp_path):
    ids = queue_images(review_server, 31, 32)
    page = open_page(True, viewport={"width": 900, "height": 760})
    sign_in(page, review_server.url)
    page.locator("#choices button").first.wait_for()
    # docs/review.png with UPDATE_SCREENSHOT=1; otherwise the test's own folder
    page.screenshot(path=SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1"
                    else tmp_path / "review.png")
    shown = page.locator("#review-image").get_attribute("src").rsplit("/", 1)[-1][:-4]
    assert shown in ids
    second = page.locator("#choices button").nth(1)
    label = second.get_attribute("value")
    page.keyboard.press("2")
    stored = review_server.feedback_dir / label / f"{shown}.jpg"
    wait_for(stored.is_file, f"the image was not filed under {label}")
    wait_for(lambda: page.locator("#review-image").get_attribute("src").endswith(
        f"{(ids - {shown}).pop()}.jpg"), "the next image did not show")
    page.keyboard.press("0")
    wait_for(lambda: not any(review_server.review_dir.iterdir()), "the discarded one stayed")
    page.get_by_text("Nothing to review now").wait_for()
    assert len(list(review_server.feedback_dir.rglob("*.jpg"))) == 1
    assert page.errors == []


def test_label_without_javascript(open_page, review_server):
    """On a phone-sized screen: every target at least 48 px tall, then a plain form post."""
    (queued,) = queue_images(review_server, 33)
    page = open_page(False, viewport={"width": 390, "height": 844}, has_touch=True)
    sign_in(page, review_server.url)
    targets = page.locator("#review-form button, #any-label")
    assert targets.count() == 3 + 2 + 1  # three classes, "File as this", Discard; the list
    for i in range(targets.count()):
        assert targets.nth(i).bounding_box()["height"] >= 48
    page.get_by_label("Another class").select_option("blue")
    page.get_by_role("button", name="File as this").click()
    page.get_by_text("Nothing to review now").wait_for()
    assert (review_server.feedback_dir / "blue" / f"{queued}.jpg").is_file()
