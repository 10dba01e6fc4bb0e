"""The model this process serves: loaded once, warmed up per process, described for /model.

Loading happens in the gunicorn master (preload_app), so every torch operation
there runs single-threaded: a forked child whose parent ever used more than one
OpenMP thread hangs on its first parallel torch op. Each worker then picks its
own thread count and warms up (gunicorn.conf.py post_worker_init) before it
takes a request; /readyz reports that per process.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import threading

import torch

from classifier.images import open_checked
from classifier.inference import Predictor
from classifier.model_files import ModelLoadError, load_learner_checked, sha256_file

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """The model cannot answer in this process right now (503)."""


class ModelService:
    def __init__(self, settings):
        self.settings = settings
        self.predictor: Predictor | None = None
        self.info: dict = {}
        self._warm_pid: int | None = None
        self._failure: str | None = None
        self._lock = threading.Lock()
        # One upload decoded at a time per process: a worker then holds at most one
        # full-size photo (up to MAX_IMAGE_PIXELS) in memory, however many threads it
        # runs and however many files a request carries. Decoding is CPU work, and
        # there is one worker per core, so this costs no throughput.
        self._decode_slot = threading.Lock()

    # -- lifecycle --------------------------------------------------------
    def load(self) -> "ModelService":
        """Load and check the export; raises ModelLoadError with one line saying why not."""
        torch.set_num_threads(1)  # keep the loading process fork-safe (see module doc)
        path = self.settings.model_path
        learner, metadata = load_learner_checked(path)
        try:
            predictor = Predictor(learner, runtime=self.settings.runtime,
                                  threads=self.settings.inference_threads)
        except ModelLoadError:  # says why itself (a notebook function the model calls)
            raise
        except Exception as exc:  # e.g. runtime="onnx" demanded but the export fails parity
            raise ModelLoadError(f"{path} cannot run with INFERENCE_RUNTIME="
                                 f"{self.settings.runtime}: {type(exc).__name__}: "
                                 f"{str(exc)[:200]}") from None
        self.predictor = predictor
        self.info = describe(learner, metadata, predictor, path)
        log.info("loaded %s: %d classes, %s, runtime %s", path, len(predictor.vocab),
                 self.info["arch"], predictor.runtime)
        return self

    def warm_up(self) -> bool:
        """Set this process's threads and run one prediction; False (and 503s) if it fails."""
        with self._lock:
            if self.ready:
                return True
            try:
                torch.set_num_threads(self.settings.inference_threads)
                self.predictor.warm_up()
            except Exception as exc:
                log.exception("warm-up failed; this process will answer 503")
                self._failure = f"warm-up failed: {type(exc).__name__}: {str(exc)[:200]}"
                return False
            self._failure = None
            self._warm_pid = os.getpid()
            return True

    @property
    def ready(self) -> bool:
        return self.predictor is not None and self._warm_pid == os.getpid()

    @property
    def failure(self) -> str | None:
        return self._failure

    # -- serving ----------------------------------------------------------
    def prepare(self, data: bytes, on_image=None):
        """Untrusted bytes -> model-sized input; raises classifier.images.ImageError (4xx).

        `on_image(image)` may look at the decoded photo (the form's preview) before it is
        dropped.
        """
        with self._decode_slot:
            image = open_checked(data, self.settings.max_image_pixels)
            extra = on_image(image) if on_image else None
            return self.predictor.prepare(image), extra

    def predict(self, items):
        """Outputs of `prepare` -> Predictions, one batch. Raises ModelUnavailable (503)."""
        if not self.ready and not self.warm_up():
            raise ModelUnavailable(self._failure or "The model is not loaded.")
        try:
            return self.predictor.predict_prepared(items)
        except Exception as exc:
            log.exception("inference failed")
            raise ModelUnavailable(f"The model failed on this request "
                                   f"({type(exc).__name__}); please retry.") from None


def describe(learner, metadata: dict | None, predictor: Predictor, path) -> dict:
    """What GET /model reports: export.json where present, else what the learner knows."""
    meta = metadata or {}
    arch = meta.get("arch") or getattr(getattr(learner, "arch", None), "__name__", None) \
        or type(learner.model).__name__
    size = meta.get("image_size") or predictor.image_size
    if isinstance(size, int):
        size = [size, size]
    created = meta.get("created_at") or dt.datetime.fromtimestamp(
        os.path.getmtime(path), dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "vocab": list(predictor.vocab),
        "arch": str(arch),
        "image_size": list(size) if size else None,
        "metrics": meta.get("metrics") or {},
        "sha256": meta.get("sha256") or sha256_file(path),
        "created_at": str(created),
        "runtime": predictor.runtime,
        "file": os.path.basename(path),
    }
