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
import time
from dataclasses import dataclass
from pathlib import Path

from flask import current_app

from app.engine_switch import measure_engines_later
from app.errors import ApiError, ModelUnavailable
from app.event_loop import off_event_loop
from app.field_signals import FieldSignals
from app.metrics import record_predictions, record_refusal, record_served_version
from app.shadow import open_shadow, shadow_ticket
from classifier.images import ImageError, decode_side, open_checked
from classifier.loader import ModelCard, load_model
from classifier.model_files import ModelLoadError
from classifier.prediction import Prediction, PredictorBase
from classifier.versions import VersionError, check_files, served_version

try:
    import torch

    from classifier.explain import ExplanationUnavailable, explain
except ImportError:  # the lean image: no torch, no fastai (classifier.loader serves the ONNX graph)
    torch = explain = None
    ExplanationUnavailable = RuntimeError

log = logging.getLogger(__name__)
EXTENSION = "classifier"  # the service's key in app.extensions


def model_service(app=None) -> ModelService:
    """The ModelService of `app` (default: the app handling this request)."""
    return (app or current_app).extensions[EXTENSION]


@dataclass
class Classified:
    """One classified upload: its name, the Prediction, on_image's result, the Grad-CAM."""
    filename: str
    prediction: Prediction
    version: str  # the version of the model that answered (ServedModel.version)
    extra: object = None
    explanation: dict | None = None

    def as_dict(self, top_k: int | None = None, threshold: float | None = None) -> dict:
        """/predict's answer for this image (without the filename)."""
        answer = self.prediction.as_dict(top_k, threshold)
        answer["version"] = self.version
        if self.explanation is not None:
            answer["explanation"] = self.explanation
        return answer


@dataclass(frozen=True)
class ServedModel:
    """One loaded and checked model. A request takes the service's current one when it starts
    and uses it to the end, so a swap (app/model_follow.py) never changes a model under it."""
    path: Path  # its export.pkl
    version: str  # the version's name, or a bare export.pkl's first 12 hex of sha256
    predictor: PredictorBase
    card: ModelCard
    info: dict  # GET /model's answer (describe), less `refused`


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
        if torch is not None:
            torch.set_num_threads(1)  # keep the loading process fork-safe (see module doc)
        from app.model_follow import live_model_path

        self.model = self.preloaded = self.open(live_model_path(self.settings.model_path))
        self.shadow = open_shadow(self)
        return self

    def open(self, path: Path, threads: int | None = None) -> ServedModel:
        """Check and load the export at `path` (sha256s, then the loader's checks, ONNX parity
        included; ModelLoadError says why not), on `threads` (a shadow's; no Grad-CAM then)."""
        settings = self.settings
        try:
            check_files(path, unused=() if torch is not None else (path.name,))
        except VersionError as exc:
            raise ModelLoadError(str(exc)) from None
        predictor, card = load_model(path, settings.runtime, threads or settings.inference_threads,
                                     keep_torch_model=settings.explanations and threads is None,
                                     option="INFERENCE_RUNTIME",
                                     precision=settings.inference_precision,
                                     measure_later=threads is None)
        version = served_version(path, card.sha256)
        log.info("loaded %s (version %s): %d classes, %s, runtime %s", path, version,
                 len(card.vocab), card.arch, predictor.runtime)
        return ServedModel(path, version, predictor, card,
                           {"version": version, **describe(card, predictor, settings)})

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
                if torch is not None:
                    torch.set_num_threads(self.predictor.torch_threads)
                self.predictor.warm_up()
            except Exception as exc:
                log.exception("warm-up failed; this process will answer 503")
                self._failure = f"warm-up failed: {type(exc).__name__}: {str(exc)[:200]}"
                return False
            self._failure = None
            self._warm_pid = os.getpid()
            record_served_version(self.model.version, None)
            measure_engines_later(self.model)
            return True

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
        """The shorter side an upload is decoded down to (twice the model's input), or None
        for a full decode (EXACT_DECODE). The form shrinks photos to it before sending."""
        return self._decode_side(self.model)

    def _decode_side(self, model: ServedModel) -> int | None:
        return decode_side(model.predictor.image_size, exact=self.settings.exact_decode)

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
        if explain and not self.info["explanations"]:
            raise ApiError("explanation_unavailable",
                           "This server has no PyTorch model to run Grad-CAM on "
                           "(EXPLANATIONS=off, or the lean image). Ask without explain=1.")
        model = self.model  # this request's model to the end, whatever a swap does meanwhile
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
        """Grad-CAM of class `index` over a prepared item; 409 when this model cannot."""
        try:
            return off_event_loop(explain, model.predictor, item, index)
        except ExplanationUnavailable as exc:
            raise ApiError("explanation_unavailable", str(exc)) from None


def describe(card: ModelCard, predictor: PredictorBase, settings) -> dict:
    """What GET /model (and the page's model card) report: the model's card, the runtime
    serving it and the settings that change its answers."""
    threshold, source = settings.unsure_threshold, "UNSURE_THRESHOLD"
    if threshold is None and card.threshold is not None:
        threshold, source = card.threshold, "export.json"
    return {
        "vocab": list(card.vocab),
        "arch": card.arch,
        "image_size": list(card.image_size) if card.image_size else None,
        "metrics": card.metrics,
        "sha256": card.sha256,
        "created_at": card.created_at,
        "runtime": predictor.runtime,
        "engine": predictor.engine_choice,
        "file": card.file,
        "metadata": card.has_export_json,
        "recall": card.recall,
        "train_images": card.train_images,
        "unsure": {"threshold": threshold, "source": source if threshold is not None else None,
                   "method": card.threshold_method if source == "export.json" else None},
        "explanations": settings.explanations and getattr(predictor, "model", None) is not None,
    }
