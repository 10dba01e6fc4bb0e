"""What a classifier answers for one image; shared by the torch and the torch-free predictors."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from classifier.images import DECODE_MARGIN, decode_side

DEFAULT_TOP_K = 5  # classes listed in "top" unless asked otherwise (fewer if the model has fewer)


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    confidence: float
    probabilities: dict[str, float]  # every class, in vocab order
    # The penultimate layer's pooled features (classifier.drift's embedding); None when the
    # model or its compiled graph does not give them. Never part of an answer.
    features: np.ndarray | None = field(default=None, repr=False, compare=False)

    def top(self, k: int | None = None) -> list[dict]:
        """The k most probable classes (default DEFAULT_TOP_K), highest first; ties in vocab order."""
        ranked = sorted(self.probabilities.items(), key=lambda kv: -kv[1])
        return [{"label": label, "probability": p}
                for label, p in ranked[:DEFAULT_TOP_K if k is None else k]]

    def is_unsure(self, threshold: float | None) -> bool:
        """Below the confidence threshold (None: never). The label stays the top class."""
        return threshold is not None and self.confidence < threshold

    def as_dict(self, top_k: int | None = None, threshold: float | None = None) -> dict:
        return {"label": self.label, "index": self.index, "confidence": self.confidence,
                "unsure": self.is_unsure(threshold), "threshold": threshold,
                "top": self.top(top_k), "probabilities": self.probabilities}


def os_lock():
    """A lock of the operating system, also under gevent's monkey-patching. A predictor's locks
    are taken in real threads (the worker's pool, app/event_loop.py); a patched, greenlet-aware
    lock made after the patching (a model loaded by a hot swap, app/model_follow.py) hung
    requests there for 30 s. A model loaded before it (preloaded in the master) got OS locks."""
    try:
        from gevent.monkey import get_original
    except ImportError:
        return threading.Lock()
    return get_original("threading", "Lock")()


class PredictorBase:
    """What the torch Predictor and the torch-free CompiledPredictor share.

    A subclass sets `vocab` and `image_size` ((height, width) or None) and implements
    `prepare(image)` (one PIL RGB image -> a model-sized item), `preparation` (what prepare
    does, as text) and `_outputs(items)` ((n, classes) float64 probabilities for prepared
    items, and their (n, dim) pooled features or None).
    """

    vocab: list[str]
    image_size: tuple[int, int] | None
    decode_margin = DECODE_MARGIN  # the model's training decode (classifier/images.py)
    engine = "onnxruntime-f32"  # what runs the compiled graph (classifier/engines.py)
    engine_choice: dict | None = None  # why that one (classifier/engine_choice.py); None: not chosen
    engine_measurement = None  # a cache miss still to measure (classifier.engine_cache.Measurement)
    _graph: bytes | str | None = None  # the compiled ONNX graph, when it serves
    _sessions: dict
    _lock: threading.Lock  # guards _sessions

    def decode_side(self, exact: bool = False) -> int | None:
        """The shorter side an image is decoded to for this model, as its training decoded
        (None: in full, with `exact` or when the model takes images as they come)."""
        return decode_side(self.image_size, exact, self.decode_margin)

    @property
    def graph(self) -> bytes | str | None:
        """The compiled ONNX graph (bytes or an .onnx path) when it serves, else None."""
        return self._graph

    def use_engine(self, choice: dict) -> None:
        """Run the compiled graph on choice["engine"] from the next forward pass on (each process
        opens its own); a pass already under way ends on the engine it started with."""
        with self._lock:
            self.engine_choice, self.engine = choice, choice["engine"]
            self._sessions.clear()

    def predict(self, image) -> Prediction:
        """One PIL RGB image (see classifier.images) -> Prediction."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images) -> list[Prediction]:
        return self.predict_prepared([self.prepare(im) for im in images])

    def predict_prepared(self, items) -> list[Prediction]:
        """Outputs of `prepare` -> Predictions, as one batch through the model."""
        return self._predictions(*self._outputs(items)) if items else []

    def probabilities(self, images) -> np.ndarray:
        """(n, classes) float64 probabilities for a list of PIL images."""
        return self._probabilities([self.prepare(im) for im in images])

    def features(self, images) -> np.ndarray | None:
        """(n, dim) pooled features for a list of PIL images, or None when the model has none."""
        return self._outputs([self.prepare(im) for im in images])[1]

    def _probabilities(self, items) -> np.ndarray:
        return self._outputs(items)[0]

    def warm_up(self) -> None:
        """Run one prediction so the first real request is not the slow one."""
        from classifier.model_files import ModelLoadError

        height, width = self.image_size or (64, 64)
        probs = self.probabilities([Image.new("RGB", (width, height), (128, 128, 128))])
        if probs.shape != (1, len(self.vocab)):
            raise ModelLoadError(f"The model returns {probs.shape[1]} outputs for "
                                 f"{len(self.vocab)} classes; the export is inconsistent.")

    def _predictions(self, probabilities: np.ndarray, features=None) -> list[Prediction]:
        out = []
        for i, row in enumerate(probabilities):
            index = int(row.argmax())
            out.append(Prediction(
                label=self.vocab[index], index=index, confidence=float(row[index]),
                probabilities={label: float(p) for label, p in zip(self.vocab, row)},
                features=None if features is None else features[i]))
        return out


def concatenate_outputs(outputs) -> tuple[np.ndarray, np.ndarray | None]:
    """Several `_outputs` results (items run one by one) -> one."""
    probabilities = np.concatenate([p for p, _ in outputs])
    features = [f for _, f in outputs]
    return probabilities, None if any(f is None for f in features) else np.concatenate(features)
