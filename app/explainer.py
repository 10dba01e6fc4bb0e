"""Grad-CAM for a model served from its compiled graph: PyTorch, fastai and export.pkl are
loaded behind it, in each worker, only for explanations.

The default image starts as the lean one does (classifier.loader.load_checked_graph: the
graph checked against learn.predict when it was compiled, no torch import), so a machine
woken by a request answers it within a second or two rather than after the five that
importing torch, torchvision and fastai takes. The preloading gunicorn master never imports
torch (a child forked from a process that ran torch on several threads hangs:
app/model_service.py); each worker starts the load after its warm-up (gunicorn.conf.py
post_worker_init) and after the engines are timed where they are (app/engine_switch.py: an
import beside the timings would skew them), in one of its real threads, so its event loop
keeps answering.

Until the load is done, ?explain=1 answers 503 `explanations_loading` with Retry-After, at
once; a load that failed answers 409 `explanation_unavailable` with the reason. Predictions
never wait for it.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from app.errors import ApiError
from app.event_loop import off_event_loop

log = logging.getLogger(__name__)
RETRY_AFTER = 5  # seconds: importing torch and fastai takes about that on 2 busy cores


def load_torch_predictor(path: Path, threads: int | None):
    """The PyTorch predictor Grad-CAM runs on (imports torch and fastai: seconds)."""
    from classifier.explain import load_explainer

    return load_explainer(path, threads)


class DeferredExplainer:
    """The PyTorch model of one served version, loaded once per process, off the serving path."""

    def __init__(self, path: Path, threads: int | None):
        self.path, self.threads = path, threads
        self.predictor = None  # classifier.inference.Predictor, once loaded in this process
        self.failure: str | None = None
        self._started_pid: int | None = None

    @property
    def state(self) -> str:
        """"ready", "loading" (or not started yet) or "failed"."""
        if self.predictor is not None:
            return "ready"
        return "failed" if self.failure else "loading"

    def start(self, after: threading.Event | None = None) -> None:
        """Load in the background of this process (once per process), once `after` is set (the
        engine measurement has ended, app/engine_switch.py); returns at once."""
        if self._started_pid == os.getpid() or self.predictor is not None:
            return
        self._started_pid = os.getpid()
        # A greenlet under gevent (threading is patched there), which waits for the load in
        # a real thread of the hub's pool; a plain thread elsewhere.
        threading.Thread(target=self._load_after, args=(after,),
                         name="explainer-load", daemon=True).start()

    def _load_after(self, after: threading.Event | None) -> None:
        if after is not None:
            after.wait()  # in this greenlet under gevent: never in a thread of the hub's pool
        off_event_loop(self._load_logged)

    def load(self) -> None:
        """Load now, in the calling thread (a test client's app, a swap's loading thread)."""
        self._started_pid = os.getpid()
        self._load_logged()

    def _load_logged(self) -> None:
        try:
            self.predictor = load_torch_predictor(self.path, self.threads)
        except Exception as exc:  # explanations fail; predictions go on
            self.failure = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.exception("pid %d: loading the PyTorch model for explanations failed",
                          os.getpid())
            return
        log.info("pid %d: PyTorch model loaded for explanations (%s)", os.getpid(), self.path)

    def predictor_for_explaining(self):
        """The loaded PyTorch predictor, or the ApiError that says why there is none yet."""
        if self.predictor is not None:
            return self.predictor
        if self.failure:
            raise ApiError("explanation_unavailable", "This server could not load the PyTorch "
                           f"model that explanations need ({self.failure}). Ask without "
                           "explain=1.")
        raise ApiError("explanations_loading", "Explanations are still loading (PyTorch, "
                       "right after start-up); predictions are served meanwhile. Retry in "
                       f"{RETRY_AFTER} s, or ask without explain=1.",
                       {"Retry-After": str(RETRY_AFTER)})
