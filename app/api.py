"""The JSON API: POST /predict, GET /model, GET /shadow, GET /openapi.json. Thin: parse, predict, answer."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from app.config import app_settings
from app.limits import charge, charge_explanations
from app.model_service import model_service
from app.openapi import openapi_document
from app.options import answer_options
from app.security import add_cors_headers, check_api_key
from app.shadow import shadow_figures
from app.uploads import FIELD, uploads_from_request
from app.url_fetch import fetcher_for

bp = Blueprint("api", __name__)


@bp.after_request
def cors(response):
    return add_cors_headers(response, app_settings().cors_origins)


@bp.route("/predict", methods=["POST"])
def predict():
    service, settings = model_service(), app_settings()
    charge("predict")  # before the key check: guessing keys costs budget too
    check_api_key(settings.api_key)
    options = answer_options(request.args, len(service.info["vocab"]), service.threshold)
    fetch_url = (fetcher_for(settings, request.environ.get("gunicorn.socket"))
                 if settings.allow_url_fetch else None)
    uploads = uploads_from_request(settings.max_batch, fetch_url=fetch_url, form_fields=(FIELD,))
    if options.explain:
        charge_explanations(len(uploads))
    results = service.classify(uploads, explain=options.explain)
    answers = [result.as_dict(options.top_k, options.threshold) for result in results]
    if len(answers) == 1:
        return jsonify(answers[0])
    return jsonify(predictions=[{"filename": result.filename, **answer}
                                for result, answer in zip(results, answers)])


@bp.get("/model")
def model():
    return jsonify(model_service().info)


@bp.get("/shadow")
def shadow():
    return jsonify(shadow_figures(model_service().shadow))


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document(model_service(), app_settings(), request.host_url))
