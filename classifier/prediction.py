"""What a classifier answers for one image; shared by the torch and the torch-free predictors."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    confidence: float
    probabilities: dict[str, float]  # every class, in vocab order

    def as_dict(self) -> dict:
        return {"label": self.label, "index": self.index, "confidence": self.confidence,
                "probabilities": self.probabilities}
