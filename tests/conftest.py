"""Fixtures shared by every test group: tiny generated datasets and models trained on them.

Everything is made here, offline, in seconds: no weights or data are downloaded.
"""
from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from harness.images import make_image_folder
from harness.notebook import export_like_a_notebook

# Under CI=true a skip not on tests/ci_skips.py's allow-list fails the run: its hooks.
from tests.ci_skips import (  # noqa: F401
    pytest_collectreport,
    pytest_runtest_logreport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)

ROOT = Path(__file__).resolve().parents[1]
__all__ = ["ROOT", "make_image_folder", "run_training"]  # imported by the training tests


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def notebook_export(image_folder, tmp_path_factory) -> Path:
    """A learner exported by fastai's tutorial code (Resize(32), one epoch from scratch),
    as a user's notebook would."""
    return export_like_a_notebook(image_folder, tmp_path_factory.mktemp("notebook") / "export.pkl")


def run_training(*args, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`python -m training.train ARGS` from the repository root, output captured."""
    return subprocess.run([sys.executable, "-m", "training.train", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="session")
def trained_model(image_folder, tmp_path_factory) -> Path:
    """The export.pkl of models/versions/<name>/, the first (so live) version trained by our own
    CLI (from scratch, 32 px) once per session.

    Beside it: export.json (metadata, sha256s), examples/<label>/, report/ and the ONNX graph.
    """
    from classifier.versions import served_model_path

    out = tmp_path_factory.mktemp("trained") / "models" / "export.pkl"
    result = run_training(image_folder, "--no-pretrained", "--size", 32, "--epochs", 1,
                          "--bs", 8, "--no-augment", "--lr", "1e-2", "--out", out,
                          timeout=900)  # seconds on a quiet machine, minutes on a shared one
    assert result.returncode == 0, result.stdout + result.stderr
    return served_model_path(out)


@pytest.fixture(scope="session")
def playwright():
    """Playwright, for the browser tests (pages come from harness.browser.page_opener)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        yield pw


COLLECT_ABOVE_MB = 1500
COLLECT_AFTER_GROWTH_MB = 300  # about one dropped app
_rss_after_collect = [0]


@pytest.fixture(autouse=True)
def free_dropped_apps():
    """An app that a test drops is freed only by the cycle collector (its model service and
    its background threads refer to each other), which the few large allocations of a model
    seldom trigger: a whole `make test` held every app it made (14 GB, and the machine ran out
    of memory). Collect after a test once this process holds more than COLLECT_ABOVE_MB and
    has grown by COLLECT_AFTER_GROWTH_MB since the last collection: a collection walks the
    whole torch/fastai heap (0.35 s), and after every test it was half of `make test-fast`."""
    yield
    rss = psutil.Process().memory_info().rss
    if rss > COLLECT_ABOVE_MB * 2**20 and rss - _rss_after_collect[0] > COLLECT_AFTER_GROWTH_MB * 2**20:
        gc.collect()
        _rss_after_collect[0] = psutil.Process().memory_info().rss


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """The app's loading path and Grad-CAM's set torch to 1 thread, for the whole process
    (app/model_service.py, classifier/explain.py): put the count back after each test, so the
    tests after it compute as they do alone (test_batchnorm's model, trained on 1 thread after
    the app tests, moved its probabilities twice as far)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    if before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)
