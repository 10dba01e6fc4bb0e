"""The model this process serves: loaded once, warmed up per process, described for /model.

Loading happens in the gunicorn master (preload_app). Where the export's graph was compiled
and checked against learn.predict (classifier.loader.load_checked_graph), the master serves
it without importing torch, and each worker loads PyTorch for explanations behind it
(app/explainer.py): the default image is ready as fast as the lean one. Otherwise (no such
graph, or INFERENCE_RUNTIME=torch) the master loads export.pkl with torch, and every torch
operation there runs single-threaded: a forked child whose parent ever used more than one
OpenMP thread hangs on its first parallel torch op. Each worker then picks its own thread
count and warms up (gunicorn.conf.py post_worker_init) before it takes a request; /readyz
reports that per process.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import threading
import time
from pathlib import Path

from flask import current_app

from app.engine_switch import measure_engines_later
from app.errors import ApiError, ModelUnavailable
from app.event_loop import off_event_loop
from app.explainer import DeferredExplainer
from app.field_signals import FieldSignals
from app.machine import installed_image
from app.metrics import record_predictions, record_refusal, record_served_version
from app.served_model import Classified, ServedModel, describe
from app.shadow import open_shadow, shadow_ticket
from classifier.images import ImageError, open_checked
from classifier.loader import ModelCard, load_checked_graph, load_model
from classifier.model_files import ModelLoadError
from classifier.prediction import PredictorBase
from classifier.versions import VersionError, check_files, served_version

log = logging.getLogger(__name__)
EXTENSION = "classifier"  # the service's key in app.extensions


def model_service(app=None) -> ModelService:
    """The ModelService of `app` (default: the app handling this request)."""
    return (app or current_app).extensions[EXTENSION]


class ModelService:
    def __init__(self, settings):
        self.settings = settings
        self.model: ServedModel | None = None
        # The model loaded in the gunicorn master, whose memory every worker shares: a swap
        # back to its version (a rollback) takes it again instead of loading a copy.
        self.preloaded: ServedModel | None = None
        self.refused: dict | None = None  # the last version this process would not serve, and why
        self.follower = None  # app.model_follow.PointerFollower, in a gunicorn worker
        self.review = None  # app.review_queue.ReviewQueue with REVIEW_DIR set
        self.shadow = None  # app.shadow.Shadow when SHADOW_MODEL is set
        self._warm_pid: int | None = None
        self._failure: str | None = None
        self._lock = threading.Lock()
        self._measured: threading.Event | None = None  # set once the engines are timed
        # One upload decoded at a time per process: a worker then holds at most one
        # decoded photo (up to MAX_IMAGE_PIXELS) in memory, however many connections it
        # serves and however many files a request carries. The next photo decodes while
        # the model runs on the previous one (the model has its own lock).
        self._decode_slot = threading.Lock()
        self.signals = FieldSignals(settings.drift_window, settings.drift_threshold)

    def install(self, app) -> None:
        """Make this the service that model_service(app) returns."""
        app.extensions[EXTENSION] = self

    # -- lifecycle --------------------------------------------------------
    def load(self) -> ModelService:
        """Load and check the export; raises ModelLoadError with one line saying why not."""
        from app.model_follow import live_model_path

        self.model = self.preloaded = self.open(live_model_path(self.settings.model_path),
                                                loading_process=True)
        self.shadow = open_shadow(self)
        return self

    def open(self, path: Path, threads: int | None = None,
             loading_process: bool = False) -> ServedModel:
        """Check and load the export at `path` (sha256s, then its checked graph, or the
        loader's checks, ONNX parity included; ModelLoadError says why not), on `threads` (a
        shadow's; no Grad-CAM then). `loading_process`: this one forks the workers (module doc)."""
        settings = self.settings
        torch_here = installed_image() == "torch"
        try:
            check_files(path, unused=() if torch_here else (path.name,))
        except VersionError as exc:
            raise ModelLoadError(str(exc)) from None
        served = threads is None  # not a shadow: Grad-CAM, and engines measured after it serves
        threads, explains = threads or settings.inference_threads, settings.explanations and served
        checked = load_checked_graph(path, threads, settings.runtime, settings.inference_precision,
                                     measure_later=served) \
            if torch_here and settings.runtime != "torch" else None
        explainer = None
        if checked is not None:
            predictor, card = checked
            explainer = DeferredExplainer(path, threads) if explains else None
        else:
            if torch_here and loading_process:
                import torch

                torch.set_num_threads(1)  # keep the loading process fork-safe (module doc)
            predictor, card = load_model(path, settings.runtime, threads,
                                         keep_torch_model=explains, option="INFERENCE_RUNTIME",
                                         precision=settings.inference_precision,
                                         measure_later=served)
        version = served_version(path, card.sha256)
        log.info("loaded %s (version %s): %d classes, %s, runtime %s%s", path, version,
                 len(card.vocab), card.arch, predictor.runtime,
                 ", its graph checked when compiled; PyTorch for explanations loads behind "
                 "it" if explainer else "")
        info = describe(card, predictor, settings, explainable=explainer is not None)
        return ServedModel(path, version, predictor, card, {"version": version, **info},
                           explainer)

    def switch(self, model: ServedModel) -> None:
        """Serve `model` (loaded and warmed up) from the next request on."""
        old, self.model, self.refused = self.model, model, None
        record_served_version(model.version, old.version if old else None)
        log.info("now serving version %s (was %s)", model.version, old.version if old else None)
        measure_engines_later(model)

    def refuse(self, version: str | None, reason: str) -> None:
        """A version that failed to load or to check: keep serving the current one, say why."""
        at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.refused = {"version": version, "reason": reason, "at": at}
        record_refusal(version)
        log.error("version %s refused, still serving %s: %s", version, self.model.version, reason)

    @property
    def predictor(self) -> PredictorBase:
        return self.model.predictor

    @property
    def card(self) -> ModelCard:
        return self.model.card

    @property
    def info(self) -> dict:
        """GET /model's answer: the served model's card, the last version refused, the shadow."""
        return {**self.model.info, "refused": self.refused, "shadow": self.shadow and self.shadow.info}

    def warm_up(self) -> bool:
        """Set this process's threads and run one prediction; False (and 503s) if it fails."""
        with self._lock:
            if self.ready:
                return True
            try:
                torch_threads = getattr(self.predictor, "torch_threads", None)
                if torch_threads is not None:  # torch serves, or runs its preprocessing
                    sys.modules["torch"].set_num_threads(torch_threads)
                self.predictor.warm_up()
            except Exception as exc:
                log.exception("warm-up failed; this process will answer 503")
                self._failure = f"warm-up failed: {type(exc).__name__}: {str(exc)[:200]}"
                return False
            self._failure = None
            self._warm_pid = os.getpid()
            record_served_version(self.model.version, None)
            self._measured = measure_engines_later(self.model)
            return True

    def load_explanations(self, background: bool) -> None:
        """Load the served model's PyTorch model for Grad-CAM, where it loads behind the
        compiled graph: now, or in the background (a gunicorn worker, after its warm-up and
        after the engines are timed: importing PyTorch beside them made bf16 time 30.6 ms
        instead of 8.7, and the choice depends on those times)."""
        explainer = self.model.explainer
        if explainer is not None:
            explainer.start(after=self._measured) if background else explainer.load()

    @property
    def ready(self) -> bool:
        return self.predictor is not None and self._warm_pid == os.getpid()

    @property
    def failure(self) -> str | None:
        return self._failure

    @property
    def threshold(self) -> float | None:
        """The server's "not sure" threshold: UNSURE_THRESHOLD, else the model's, else None."""
        return self.info["unsure"]["threshold"]

    @property
    def report_dir(self):
        """The training report beside the model (report/report.html), or None."""
        folder = self.model.path.parent / "report"
        return folder if (folder / "report.html").is_file() else None

    @property
    def examples_dir(self) -> Path:
        """The served model's one-click examples (examples/<label>/<image>)."""
        return self.model.path.parent / "examples"

    # -- serving ----------------------------------------------------------
    def prepare(self, data: bytes, on_image=None, model: ServedModel | None = None):
        """Untrusted bytes -> input sized for `model` (default: the one served now); raises
        classifier.images.ImageError (4xx).

        `on_image(image)` may look at the decoded photo (the form's preview) before it is
        dropped.
        """
        return off_event_loop(self._decode, data, on_image, model or self.model)

    @property
    def decode_min_side(self) -> int | None:
        """The shorter side an upload is decoded down to (the model's input size times its
        decode margin), or None for a full decode (EXACT_DECODE). The form shrinks photos to
        it before sending."""
        return self._decode_side(self.model)

    def _decode_side(self, model: ServedModel) -> int | None:
        return model.predictor.decode_side(exact=self.settings.exact_decode)

    def _decode(self, data: bytes, on_image, model: ServedModel):
        # Taken in the thread that decodes: an OS lock held across an event-loop wait
        # would block every other greenlet that reaches it.
        with self._decode_slot:
            settings = self.settings
            started = time.perf_counter()
            image = open_checked(data, settings.max_image_pixels,
                                 min_side=self._decode_side(model),
                                 max_declared=settings.max_declared_pixels)
            self.signals.record_input(model, image, len(data), time.perf_counter() - started)
            extra = on_image(image) if on_image else None
            return model.predictor.prepare(image), extra

    def predict(self, items, model: ServedModel | None = None):
        """Outputs of `prepare` -> Predictions, one batch on `model` (default: the one served
        now). Raises ModelUnavailable (503)."""
        if not self.ready and not self.warm_up():
            raise ModelUnavailable(self._failure or "The model is not loaded.")
        try:
            return off_event_loop((model or self.model).predictor.predict_prepared, items)
        except Exception as exc:
            log.exception("inference failed")
            raise ModelUnavailable(f"The model failed on this request "
                                   f"({type(exc).__name__}); please retry.") from None

    def classify(self, uploads, on_image=None, explain: bool = False) -> list[Classified]:
        """Classify app.uploads.Upload's as one batch; with `explain`, a Grad-CAM for each.

        Each photo is decoded and shrunk to model size before the next is read, and its
        bytes dropped; an ImageError in a batch names the file.
        """
        model = self.model  # this request's model to the end, whatever a swap does meanwhile
        if explain and not model.info["explanations"]:
            raise ApiError("explanation_unavailable",
                           "This server has no PyTorch model to run Grad-CAM on "
                           "(EXPLANATIONS=off, or the lean image). Ask without explain=1.")
        if explain and model.explainer is not None:
            model.explainer.predictor_for_explaining()  # 503 while it loads, before any decode
        review = self.review  # REVIEW_DIR: each image also shrunk, and kept if wanted (below)
        on_image = review.looking(on_image, model) if review else on_image
        shadow, on_image = shadow_ticket(self.shadow, model, on_image)
        prepared = []
        for upload in uploads:
            try:
                item, extra = self.prepare(upload.data, on_image, model)
            except ImageError as exc:
                if len(uploads) > 1:
                    exc.args = (f"{upload.filename}: {exc}",)
                raise
            upload.data = b""  # the bytes are not needed any more
            prepared.append((upload.filename, item, extra))
        started = time.perf_counter()
        predictions = self.predict([item for _, item, _ in prepared], model)
        record_predictions(predictions, model.version)
        self.signals.record_answers(model, predictions, time.perf_counter() - started)
        prepared = review.consider(prepared, predictions, model) if review else prepared
        if shadow:  # only queued here: the shadow runs in a thread of its own, at low priority
            shadow.send(model.version, [item for _, item, _ in prepared], predictions)
        return [Classified(name, prediction, model.version, extra,
                           self.explain(item, prediction.index, model) if explain else None)
                for (name, item, extra), prediction in zip(prepared, predictions)]

    def explain(self, item, index: int, model: ServedModel) -> dict:
        """Grad-CAM of class `index` over a prepared item; 409 when this model cannot, 503
        while its PyTorch model is still loading (app/explainer.py)."""
        predictor = model.explainer.predictor_for_explaining() if model.explainer else \
            model.predictor
        from classifier.explain import ExplanationUnavailable, explain

        try:
            return off_event_loop(explain, predictor, item, index)
        except ExplanationUnavailable as exc:
            raise ApiError("explanation_unavailable", str(exc)) from None
