"""The JSON API: POST /predict, GET /model, GET /openapi.json. Thin: parse, predict, answer."""
from __future__ import annotations

from flask import Blueprint, jsonify

from app.model_service import model_service
from app.openapi import openapi_document
from app.security import add_cors_headers, check_api_key
from app.uploads import uploads_from_request

bp = Blueprint("api", __name__)


@bp.after_request
def cors(response):
    return add_cors_headers(response, model_service().settings.cors_origins)


@bp.route("/predict", methods=["POST"])
def predict():
    service = model_service()
    check_api_key(service.settings.api_key)
    results = service.classify(uploads_from_request(service.settings.max_batch))
    if len(results) == 1:
        return jsonify(results[0][2].as_dict())
    return jsonify(predictions=[{"filename": name, **prediction.as_dict()}
                                for name, _, prediction in results])


@bp.get("/model")
def model():
    return jsonify(model_service().info)


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document(model_service()))
