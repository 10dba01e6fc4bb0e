"""Liveness (the process answers) and readiness (this process has the model loaded and warm)."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    service = current_app.extensions["classifier"]
    if service.ready:
        return jsonify(status="ready", runtime=service.predictor.runtime)
    message = service.failure or "The model is loading or warming up."
    response = jsonify(error={"code": "model_unavailable", "message": message})
    response.status_code = 503
    response.headers["Retry-After"] = "2"
    return response
