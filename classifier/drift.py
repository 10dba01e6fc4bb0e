"""Has the traffic drifted from what the model was validated on? Reference and score, no Flask.

Training records a *reference* in export.json (`field_reference`, made by `build_reference`
from the validation answers): the histogram of top-class confidences, the share of each
predicted class, and a compact summary of the penultimate-layer embedding (the pooled
features before the classifier head): its mean, its first K principal directions (stored
as float16, base64) and the variance along each.

The server keeps a `DriftWindow` of its most recent answers and `score`s it against the
reference. Three signals, all on the population-stability index's scale (PSI: the
symmetric KL divergence of two histograms; under 0.1 "no shift", 0.1-0.25 "moderate",
over 0.25 "significant", the usual reading):

- `confidence`: PSI of the live confidence histogram against the reference's;
- `classes`: PSI of the live predicted-class shares against the reference's;
- `embedding`: the squared distance between the live window's centroid and the reference's,
  within the reference's principal directions, less what sampling alone explains (the two
  centroids' variances), in units of the reference's spread there (the mean squared
  distance of a validation image from its centroid). 0.25: the centroid has moved by half a
  typical image's distance from it. Measured against the total spread rather than
  direction by direction: the smallest directions' variances, fitted on a few validation
  images, are underestimated, and dividing by them raised false alarms on unchanged traffic.
  The spread itself is not compared, for the same reason.

The drift score is the largest of the three, compared with one threshold (DRIFT_THRESHOLD,
0.25). It is computed only on a full window, because PSI's noise grows as the sample
shrinks: with 10 bins, 200 answers against a few hundred reference ones keep it near 0.05-0.1
when nothing has changed.
"""
from __future__ import annotations

import base64
import collections
import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE_EDGES = tuple(round(i / 10, 1) for i in range(11))  # 10 bins over [0, 1]
MAX_COMPONENTS = 16  # principal directions kept in the reference
MIN_EMBEDDING_IMAGES = 8  # fewer validation images: no embedding summary
IMAGES_PER_COMPONENT = 4  # k <= n / 4: directions fitted on fewer images are noise
PSEUDO_COUNT = 0.5  # added to every bin on both sides, so an empty bin costs a finite amount
DEFAULT_THRESHOLD = 0.25  # PSI's usual "significant shift"
SIGNALS = ("confidence", "classes", "embedding")


def _pack(array: np.ndarray) -> str:
    return base64.b64encode(np.asarray(array, dtype="<f2").tobytes()).decode("ascii")


def _unpack(text: str, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float32).reshape(shape)


def confidence_counts(confidences) -> list[int]:
    """How many confidences fall in each of CONFIDENCE_EDGES' bins (1.0 in the last)."""
    counts, _ = np.histogram(np.clip(np.asarray(confidences, float), 0, 1), bins=CONFIDENCE_EDGES)
    return [int(c) for c in counts]


def embedding_summary(features: np.ndarray) -> dict | None:
    """Mean, principal directions and variances of (n, dim) features; None with too few rows."""
    features = np.asarray(features, dtype=np.float64)
    n = len(features)
    k = min(MAX_COMPONENTS, n // IMAGES_PER_COMPONENT, features.shape[1] if n else 0)
    if n < MIN_EMBEDDING_IMAGES or k < 1:
        return None
    mean = features.mean(axis=0)
    _, singular, directions = np.linalg.svd(features - mean, full_matrices=False)
    variance = singular[:k] ** 2 / (n - 1)
    return {"images": n, "dim": int(features.shape[1]), "components": int(k),
            "encoding": "float16 little-endian, base64",
            "mean": _pack(mean), "directions": _pack(directions[:k]),
            "variance": [float(v) for v in variance]}


def build_reference(probabilities: np.ndarray, vocab, features: np.ndarray | None) -> dict:
    """export.json's `field_reference` from validation probabilities (n, classes) and the
    validation images' embedding (n, dim), or None where the model gives none."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, int)
    return {
        "images": len(probabilities),
        "confidence_edges": list(CONFIDENCE_EDGES),
        "confidence_counts": confidence_counts(probabilities.max(axis=1)
                                               if len(probabilities) else []),
        "class_counts": {str(label): int((predicted == i).sum()) for i, label in enumerate(vocab)},
        "embedding": embedding_summary(features) if features is not None else None,
    }


def psi(expected_counts, live_counts) -> float:
    """Population-stability index of two histograms over the same bins (counts, smoothed)."""
    expected = np.asarray(expected_counts, float) + PSEUDO_COUNT
    live = np.asarray(live_counts, float) + PSEUDO_COUNT
    p, q = expected / expected.sum(), live / live.sum()
    return float(np.sum((q - p) * np.log(q / p)))


class Reference:
    """A `field_reference` unpacked once for scoring."""

    def __init__(self, reference: dict, vocab):
        self.vocab = [str(v) for v in vocab]
        self.images = int(reference["images"])
        self.confidence_counts = np.asarray(reference["confidence_counts"], float)
        counts = reference["class_counts"]
        self.class_counts = np.asarray([counts.get(label, 0) for label in self.vocab], float)
        summary = reference.get("embedding")
        self.embedding = None
        if summary:
            k, dim = summary["components"], summary["dim"]
            self.embedding = (_unpack(summary["mean"], (dim,)),
                              _unpack(summary["directions"], (k, dim)),
                              np.maximum(np.asarray(summary["variance"], np.float64), 1e-12))

    @property
    def confidence_shares(self) -> list[float]:
        return list(self.confidence_counts / max(self.confidence_counts.sum(), 1))

    @property
    def class_shares(self) -> dict[str, float]:
        total = max(self.class_counts.sum(), 1)
        return {label: float(c / total) for label, c in zip(self.vocab, self.class_counts)}

    def embedding_shift(self, features: np.ndarray) -> float | None:
        """How far the live centroid has moved from the reference's, within the reference's
        principal directions, in units of the reference's spread there (see the module doc)."""
        if self.embedding is None or len(features) < 2:
            return None
        mean, directions, variance = self.embedding
        if features.shape[1] != len(mean):
            return None
        projected = ((np.asarray(features, np.float32) - mean) @ directions.T).astype(np.float64)
        spread = variance.sum()
        squared = float(np.sum(projected.mean(axis=0) ** 2))
        # what sampling alone puts between two centroids: the live one's and the reference's
        chance = projected.var(axis=0, ddof=1).sum() / len(projected) + spread / self.images
        return float(max(squared - chance, 0.0) / spread)


@dataclass(frozen=True)
class DriftScores:
    """One window scored: each signal (None: not measurable), their maximum, the window size."""
    confidence: float
    classes: float
    embedding: float | None
    answers: int

    @property
    def score(self) -> float:
        return max(v for v in (self.confidence, self.classes, self.embedding) if v is not None)

    def as_dict(self) -> dict:
        return {"score": self.score, "confidence": self.confidence, "classes": self.classes,
                "embedding": self.embedding, "answers": self.answers}


class DriftWindow:
    """The last `size` answers of one model version: confidence, class index, embedding.

    `add` is O(1) (a bounded deque); the work is in `scores`, which callers run off the
    request path and at most once a second.
    """

    def __init__(self, size: int, classes: int):
        self.size, self.classes = size, classes
        self._answers: collections.deque = collections.deque(maxlen=size)

    def add(self, confidence: float, index: int, features) -> None:
        self._answers.append((confidence, index, features))

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def full(self) -> bool:
        return len(self._answers) == self.size

    def live_confidence_shares(self) -> list[float]:
        counts = confidence_counts([a[0] for a in self._answers])
        return [c / max(len(self._answers), 1) for c in counts]

    def live_class_shares(self) -> list[float]:
        counts = np.bincount([a[1] for a in self._answers], minlength=self.classes)
        return list(counts / max(len(self._answers), 1))

    def scores(self, reference: Reference) -> DriftScores | None:
        """The window against `reference`; None until the window is full."""
        if not self.full:
            return None
        answers = list(self._answers)
        confidence = psi(reference.confidence_counts,
                         confidence_counts([a[0] for a in answers]))
        classes = psi(reference.class_counts,
                      np.bincount([a[1] for a in answers], minlength=self.classes))
        features = [a[2] for a in answers if a[2] is not None]
        embedding = (reference.embedding_shift(np.stack(features))
                     if len(features) == len(answers) else None)
        if embedding is not None and not math.isfinite(embedding):
            embedding = None
        return DriftScores(confidence, classes, embedding, len(answers))
