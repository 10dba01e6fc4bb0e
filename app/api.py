"""The JSON API: POST /predict, GET /model, GET /openapi.json. Thin: parse, predict, answer."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from app.metrics import record_predictions
from app.openapi import openapi_document
from app.security import add_cors_headers, check_api_key
from app.uploads import prepare_uploads, uploads_from_request

bp = Blueprint("api", __name__)


def _service():
    return current_app.extensions["classifier"]


def classify_uploads(uploads, on_image=None):
    """[(filename, on_image's result, Prediction)]: decode each, then one batch."""
    service = _service()
    prepared = prepare_uploads(uploads, service, on_image)
    predictions = service.predict([item for _, item, _ in prepared])
    record_predictions(predictions)
    return [(name, extra, prediction)
            for (name, _, extra), prediction in zip(prepared, predictions)]


@bp.after_request
def cors(response):
    return add_cors_headers(response, _service().settings.cors_origins)


@bp.route("/predict", methods=["POST"])
def predict():
    settings = _service().settings
    check_api_key(settings.api_key)
    uploads = uploads_from_request(settings.max_batch)
    results = classify_uploads(uploads)
    if len(results) == 1:
        return jsonify(results[0][2].as_dict())
    return jsonify(predictions=[{"filename": name, **prediction.as_dict()}
                                for name, _, prediction in results])


@bp.get("/model")
def model():
    return jsonify(_service().info)


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document(_service()))
