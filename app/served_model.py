"""A loaded model as the service serves it (ServedModel, GET /model's `describe`) and one
classified upload (Classified): the data app/model_service.py passes around."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.explainer import DeferredExplainer
from classifier.loader import ModelCard
from classifier.prediction import Prediction, PredictorBase


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
    # Served from its checked graph: the PyTorch model for Grad-CAM, loaded behind it
    # (app/explainer.py); None where `predictor` explains itself or explanations are off.
    explainer: DeferredExplainer | None = None

    @property
    def explanations(self) -> str:
        """/readyz's word for Grad-CAM in this process: "ready", "loading", "failed" or "off"."""
        if self.explainer is not None:
            return self.explainer.state
        return "ready" if self.info["explanations"] else "off"


def describe(card: ModelCard, predictor: PredictorBase, settings,
             explainable: bool = False) -> dict:
    """What GET /model (and the page's model card) report: the model's card, the runtime
    serving it and the settings that change its answers. `explainable`: a PyTorch model for
    Grad-CAM loads behind the compiled graph that serves (app/explainer.py)."""
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
        "explanations": settings.explanations and (
            explainable or getattr(predictor, "model", None) is not None),
    }
