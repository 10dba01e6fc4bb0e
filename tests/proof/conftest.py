"""Fixtures for the proof suites: a small model, a real gunicorn serving it, a memory watch.

The proof suites only run against the real served command.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests

from harness import ROOT
from harness.browser import page_opener
from harness.images import image_bytes
from harness.memory import MemoryWatch
from harness.servers import GunicornServer

ARTIFACTS = ROOT / "test-artifacts"
FIGURES = ARTIFACTS / "proof_figures.json"

# The fuzz/browser server's limits, set low so oversize and bomb cases are cheap to send.
# gunicorn's worker timeout is shortened (from the config's 60 s) only so that the slow-client
# test, which checks that a stalled client is cut off within it, stays short.
# MAX_DECLARED_PIXELS is lowered too: a baseline JPEG declaring 144 MP decodes at 1/8 scale
# (2.25 MP, under MAX_IMAGE_PIXELS), so only the header ceiling refuses it as too large.
PROOF_ENV = {"MAX_UPLOAD_MB": "1", "MAX_IMAGE_PIXELS": "4000000", "MAX_BATCH": "8",
             "MAX_DECLARED_PIXELS": "100000000",
             "WEB_CONCURRENCY": "2", "THREADS": "2", "GUNICORN_CMD_ARGS": "--timeout 15"}



def record_figures(**figures) -> None:
    """Merge measured figures into test-artifacts/proof_figures.json (read by docs and CI)."""
    ARTIFACTS.mkdir(exist_ok=True)
    data = {}
    if FIGURES.exists():
        try:
            data = json.loads(FIGURES.read_text())
        except ValueError:
            data = {}
    data.update(figures)
    FIGURES.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="session")
def proof_model(request) -> Path:
    """The shared 32 px model (export.pkl + export.json + examples/); PROOF_MODEL=path
    overrides it."""
    if os.environ.get("PROOF_MODEL"):
        return Path(os.environ["PROOF_MODEL"]).resolve()
    return Path(request.getfixturevalue("trained_model"))


@pytest.fixture(scope="session")
def proof_server(proof_model, tmp_path_factory):
    """One real gunicorn (2 workers x 2 threads, 1 MB uploads, 4 MP images) for fuzz and browser.

    Its memory watch starts once every worker has answered a prediction, so the baseline
    includes each worker's warmed-up runtime."""
    folder = tmp_path_factory.mktemp("proof-server")
    env = {**PROOF_ENV, "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics")}
    server = GunicornServer(proof_model, env=env,
                            log_path=folder / "gunicorn.log")
    (folder / "metrics").mkdir()
    server.start()

    def predict():
        r = requests.post(server.url + "/predict", headers={"Connection": "close"}, timeout=60,
                          files={"file": ("a.png", image_bytes("PNG"), "image/png")})
        assert r.status_code == 200, r.text

    server.until_every_worker_answered(predict, "/predict")
    server.watch = MemoryWatch(server)
    yield server
    server.watch.stop()
    server.stop()


BROWSER_TIMEOUT_MS = 20_000


@pytest.fixture
def open_page(playwright, proof_server):
    """open_page(javascript=True, **context options) -> a page on the served form."""
    with page_opener(playwright, proof_server.url, BROWSER_TIMEOUT_MS) as open_:
        yield open_


@pytest.fixture(scope="module")
def vocab(proof_server):
    return requests.get(proof_server.url + "/model", timeout=10).json()["vocab"]
