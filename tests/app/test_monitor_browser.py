"""/monitor in a real browser, with JavaScript on and off, against the real gunicorn (its
metrics merged over workers); the docs' screenshot (docs/monitor.png) is taken here:

    UPDATE_SCREENSHOT=1 .venv/bin/python -m pytest tests/app/test_monitor_browser.py
"""
from __future__ import annotations

import os
import re

import pytest
import requests
from PIL import Image, ImageOps

from harness import ROOT
from harness.browser import CHROMIUM, SKIP_REASON, page_opener
from harness.images import encode, shuffled_image_folder
from harness.servers import GunicornServer

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)]

SCREENSHOT = ROOT / "docs" / "monitor.png"
WINDOW = 30


@pytest.fixture(scope="module")
def shifted_server(referenced_model, tmp_path_factory):
    """One worker (so the page's window is the one that saw every request) that has seen 30
    in-distribution images and then 30 colour-inverted ones."""
    server = GunicornServer(referenced_model, env={"WEB_CONCURRENCY": "1",
                                                   "DRIFT_WINDOW": str(WINDOW)}).start()
    paths = shuffled_image_folder(tmp_path_factory.mktemp("stream"), WINDOW // 3, seed=11)
    with requests.Session() as session:
        for data in [p.read_bytes() for p in paths] + [
                encode(ImageOps.invert(Image.open(p).convert("RGB"))) for p in paths]:
            answer = session.post(server.url + "/predict", files={"file": ("x.png", data)},
                                  timeout=30)
            assert answer.status_code == 200, answer.text
    yield server
    server.stop()


@pytest.fixture
def open_page(playwright, shifted_server):
    with page_opener(playwright, shifted_server.url, 30_000) as open_:
        yield open_


def test_metrics_merge_the_drift_score_over_the_workers(shifted_server):
    text = requests.get(shifted_server.url + "/metrics", timeout=10).text
    score = re.search(r'classifier_drift_score\{signal="score",version="[^"]+"\} (\S+)', text)
    assert score and float(score.group(1)) > 0.25, text[-2000:]
    assert "classifier_drift_threshold 0.25" in text


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_monitor_renders_the_shift_with_and_without_javascript(open_page, javascript, tmp_path):
    page = open_page(javascript, viewport={"width": 1000, "height": 1300})
    page.goto(page.url + "monitor")
    status = page.locator("#drift-status")
    assert re.search(r"Drift\s+score [\d.]+ against the threshold 0.25: significant shift",
                     status.inner_text())
    charts = page.locator("svg.chart")
    assert charts.count() == 7
    for i in range(charts.count()):
        box = charts.nth(i).bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50  # drawn, not collapsed
    assert page.get_by_role("cell", name="PNG").is_visible()
    assert page.errors == []
    if javascript:
        path = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1" else tmp_path / "m.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000
