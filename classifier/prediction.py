"""What a classifier answers for one image; shared by the torch and the torch-free predictors."""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TOP_K = 5  # classes listed in "top" unless asked otherwise (fewer if the model has fewer)


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    confidence: float
    probabilities: dict[str, float]  # every class, in vocab order

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
