"""Field signals: what the traffic and the model's answers look like, per model version, in
/metrics and on /monitor, and a drift score against the reference training recorded.

Prometheus (merged over the workers, PROMETHEUS_MULTIPROC_DIR, like app/metrics.py):

- `classifier_confidence` (histogram of top-class confidence), `classifier_unsure_total`
  (answers below the server's "not sure" threshold; with app/metrics.py's
  `classifier_predictions_total`, which also gives the answers per class, that is the rate);
- `classifier_input_images_total`, `classifier_input_bytes`, `classifier_input_megapixels`
  (by format: JPEG, PNG, HEIF...), `classifier_decode_seconds`, `classifier_model_seconds`;
- `classifier_drift_score{signal="score|confidence|classes|embedding"}` and
  `classifier_drift_threshold` (DRIFT_THRESHOLD). classifier/drift.py says what they mean.

Each worker keeps its own window of its last DRIFT_WINDOW answers per version and its own
score; the gauge shows the largest over the live workers ("livemax"). The trade-off: no
shared state or lock between workers on the request path, but each worker needs a full
window of its own (with W workers, about W x DRIFT_WINDOW requests after a start or a swap
before any score), and a shift is seen by each worker separately, as its share of the
traffic reaches it. A request only appends to a bounded deque; the score is recomputed after
the response has gone (`call_on_close`), at most once a second, or when /monitor is read.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from flask import g, has_request_context, request
from prometheus_client import Counter, Gauge, Histogram

from classifier.drift import CONFIDENCE_EDGES, SIGNALS, DriftScores, DriftWindow, Reference

CONFIDENCE = Histogram("classifier_confidence", "Top-class confidence of each answer.",
                       ["version"], buckets=CONFIDENCE_EDGES[1:])
UNSURE = Counter("classifier_unsure_total", "Answers below the server's \"not sure\" "
                 "threshold (UNSURE_THRESHOLD or the model's; not ?threshold=).", ["version"])
INPUTS = Counter("classifier_input_images_total", "Images decoded, by file format.",
                 ["format", "version"])
INPUT_BYTES = Histogram("classifier_input_bytes", "Size of each uploaded image file, bytes.",
                        ["format", "version"],
                        buckets=(1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7))
INPUT_MEGAPIXELS = Histogram("classifier_input_megapixels", "Pixels each upload declares, "
                             "millions.", ["format", "version"],
                             buckets=(0.01, 0.1, 0.3, 1, 3, 8, 12, 24, 50))
DECODE_SECONDS = Histogram("classifier_decode_seconds", "Time to check and decode one upload.",
                           ["version"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                 0.25, 0.5, 1, 2.5))
MODEL_SECONDS = Histogram("classifier_model_seconds", "Time of one forward pass (a request's "
                          "batch).", ["version"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025,
                                                           0.05, 0.1, 0.25, 0.5, 1, 2.5))
DRIFT = Gauge("classifier_drift_score", "Drift of the last DRIFT_WINDOW answers from the "
              "training reference (PSI scale; signal=score is the largest of the others); "
              "the largest over the workers.", ["version", "signal"],
              multiprocess_mode="livemax")
THRESHOLD = Gauge("classifier_drift_threshold", "DRIFT_THRESHOLD: a drift score above it is "
                  "a significant shift.", multiprocess_mode="livemax")

SCORE_INTERVAL_S = 1.0  # the score is recomputed at most this often (or when read)
HISTORY_MINUTES = 6 * 60  # /monitor's charts cover the last six hours, a point a minute


@dataclass
class Minute:
    """One minute of one version's answers, for /monitor's charts."""
    answers: int = 0
    unsure: int = 0
    confidence_sum: float = 0.0
    model_seconds: float = 0.0
    passes: int = 0
    drift: float | None = None


@dataclass
class VersionSignals:
    """One version's window, reference, last score and history in this worker."""
    window: DriftWindow
    reference: Reference | None
    scores: DriftScores | None = None
    scored_at: float = 0.0
    history: dict[int, Minute] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    decode_seconds: float = 0.0
    decodes: int = 0

    def minute(self, now: float) -> Minute:
        key = int(now // 60)
        if key not in self.history:
            self.history[key] = Minute()
            for old in [k for k in self.history if k <= key - HISTORY_MINUTES]:
                del self.history[old]
        return self.history[key]


class FieldSignals:
    """This worker's field signals, per model version."""

    def __init__(self, window: int, threshold: float):
        self.window_size, self.threshold = window, threshold
        self.versions: dict[str, VersionSignals] = {}
        self._lock = threading.Lock()

    def of(self, model) -> VersionSignals:
        """The signals of a app.model_service.ServedModel, made on its first answer."""
        found = self.versions.get(model.version)
        if found is None:
            reference = model.card.field_reference
            found = VersionSignals(
                DriftWindow(self.window_size, len(model.card.vocab)),
                Reference(reference, model.card.vocab) if reference else None)
            self.versions[model.version] = found
        return found

    def record_input(self, model, image, size: int, seconds: float):
        """One decoded upload (`image`, from classifier.images.open_checked) of `size` bytes."""
        fmt, version = image.info.get("upload_format") or "unknown", model.version
        pixels = image.info.get("upload_size")
        INPUTS.labels(format=fmt, version=version).inc()
        INPUT_BYTES.labels(format=fmt, version=version).observe(size)
        if pixels:
            INPUT_MEGAPIXELS.labels(format=fmt, version=version).observe(pixels[0] * pixels[1] / 1e6)
        DECODE_SECONDS.labels(version=version).observe(seconds)
        signals = self.of(model)
        with self._lock:
            signals.formats[fmt] = signals.formats.get(fmt, 0) + 1
            signals.decode_seconds += seconds
            signals.decodes += 1

    def record_answers(self, model, predictions, seconds: float):
        """A request's answers: kept for after the response (or taken now outside one)."""
        threshold = model.info["unsure"]["threshold"]  # the server's, as /model says
        if has_request_context():
            if "field_answers" not in g:
                g.field_answers = []
            g.field_answers.append((model, predictions, threshold, seconds))
        else:
            self.take(model, predictions, threshold, seconds)

    def take(self, model, predictions, threshold: float | None, seconds: float) -> None:
        """Count answers in the metrics and the window; rescore if the last score is old."""
        version, now = model.version, time.time()
        signals = self.of(model)
        MODEL_SECONDS.labels(version=version).observe(seconds)
        unsure = 0
        with self._lock:
            minute = signals.minute(now)
            for prediction in predictions:
                CONFIDENCE.labels(version=version).observe(prediction.confidence)
                signals.window.add(prediction.confidence, prediction.index, prediction.features)
                minute.answers += 1
                minute.confidence_sum += prediction.confidence
                unsure += prediction.is_unsure(threshold)
            minute.unsure += unsure
            minute.model_seconds += seconds
            minute.passes += 1
        if unsure:
            UNSURE.labels(version=version).inc(unsure)
        if now - signals.scored_at >= SCORE_INTERVAL_S:
            self.rescore(version)

    def rescore(self, version: str) -> DriftScores | None:
        """Score `version`'s window now; sets the gauges and the minute's point."""
        signals = self.versions.get(version)
        if signals is None or signals.reference is None:
            return None
        with self._lock:
            signals.scored_at = time.time()
            scores = signals.window.scores(signals.reference)
            signals.scores = scores
            if scores is not None:
                signals.minute(signals.scored_at).drift = scores.score
        if scores is not None:
            DRIFT.labels(version=version, signal="score").set(scores.score)
            for name in SIGNALS:
                value = getattr(scores, name)
                if value is not None:
                    DRIFT.labels(version=version, signal=name).set(value)
        return scores

    def flush(self, answers) -> None:
        for args in answers:
            self.take(*args)

    def rescore_all(self) -> None:
        # Set here, in the worker: a value set in gunicorn's master is not among the
        # workers' merged files.
        THRESHOLD.set(self.threshold)
        for version in list(self.versions):
            self.rescore(version)


def install(app, signals: FieldSignals) -> None:
    """Answers recorded in a request are counted after its response has been sent; /metrics
    is answered with this worker's scores fresh."""
    @app.before_request
    def fresh_scores_for_metrics():
        if request.endpoint == "metrics.metrics":
            signals.rescore_all()


    @app.after_request
    def count_after_response(response):
        answers = g.pop("field_answers", None)
        if answers:
            response.call_on_close(lambda: signals.flush(answers))
        return response
