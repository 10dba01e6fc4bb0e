"""Liveness (the process answers) and readiness (this process has the model loaded and warm)."""
from __future__ import annotations

from flask import Blueprint, jsonify

from app.errors import ModelUnavailable
from app.model_service import model_service

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    service = model_service()
    if service.ready:
        return jsonify(status="ready", runtime=service.predictor.runtime,
                       explanations=service.model.explanations)
    raise ModelUnavailable(service.failure or "The model is loading or warming up.",
                           retry_after=2)
