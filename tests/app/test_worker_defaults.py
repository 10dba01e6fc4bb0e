"""Worker and inference-thread counts chosen when none are set: neither more than the cores."""
from __future__ import annotations

import os

import pytest

from app.config import ENV_NAMES, load_settings
from harness.shipped_config import gunicorn_settings

UNSET = {name: "" for name in ENV_NAMES}


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 6, 8, 16, 64])
def test_default_counts_never_exceed_the_cores(monkeypatch, cores):
    # The cores this process may use, as a container's cpuset reports them.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    settings = load_settings(environ=UNSET)
    assert 1 <= settings.workers <= cores
    # Each worker's network may use every core (a lone request is not held to one); the
    # workers share them when all are busy (docs/measurements.md measured that trade).
    assert 1 <= settings.inference_threads <= cores
    # gunicorn.conf.py starts that many workers.
    assert gunicorn_settings(UNSET)["workers"] == settings.workers
