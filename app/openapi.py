"""The OpenAPI 3 document of the JSON API (GET /openapi.json), checked against real answers."""
from __future__ import annotations

from app.errors import INPUT_CODES

ERROR_CODES = ["missing_file", "invalid_image", "payload_too_large", "image_too_large",
               "unsupported_media_type", "unauthorized", "not_found", "method_not_allowed",
               "model_unavailable", "bad_request", "internal_error", *INPUT_CODES]


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(ref: str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


SCHEMAS = {
    "Prediction": {
        "type": "object",
        "required": ["label", "index", "confidence", "probabilities"],
        "properties": {
            "label": {"type": "string", "description": "Top-1 class."},
            "index": {"type": "integer", "minimum": 0, "description": "Its index in vocab."},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "probabilities": {"type": "object", "description": "Every class, in vocab order; "
                              "sums to 1.", "additionalProperties": {
                                  "type": "number", "minimum": 0, "maximum": 1}},
        },
    },
    "NamedPrediction": {"allOf": [
        {"$ref": "#/components/schemas/Prediction"},
        {"type": "object", "required": ["filename"],
         "properties": {"filename": {"type": "string"}}}]},
    "BatchPrediction": {
        "type": "object", "required": ["predictions"],
        "properties": {"predictions": {"type": "array", "minItems": 2, "items": {
            "$ref": "#/components/schemas/NamedPrediction"}}},
    },
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"],
                                 "properties": {"code": {"type": "string", "enum": ERROR_CODES},
                                                "message": {"type": "string"}}}},
    },
    "ModelInfo": {
        "type": "object",
        "required": ["vocab", "arch", "image_size", "metrics", "sha256", "created_at", "runtime"],
        "properties": {
            "vocab": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "arch": {"type": "string"},
            "image_size": {"type": "array", "nullable": True, "items": {"type": "integer"},
                           "minItems": 2, "maxItems": 2, "description": "[height, width]"},
            "metrics": {"type": "object", "description": "Validation metrics from export.json "
                        "(empty for a notebook export)."},
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "created_at": {"type": "string"},
            "runtime": {"type": "string", "enum": ["onnx", "torch"]},
            "file": {"type": "string"},
        },
    },
    "Status": {"type": "object", "required": ["status"],
               "properties": {"status": {"type": "string"}, "runtime": {"type": "string"}}},
}


def json_request_schema(settings) -> dict:
    """The JSON body of POST /predict (app/json_uploads.py): exactly one of three fields."""
    base64_image = {"type": "string", "format": "byte", "description": "Standard or URL-safe "
                    "base64, or a data: URL (data:image/png;base64,...)."}
    url = {"type": "string", "format": "uri", "description": "http(s) URL of an image, "
           "fetched by the server" + ("." if settings.allow_url_fetch else
                                      ": off on this server (ALLOW_URL_FETCH).")}
    return {"description": f"At most {settings.max_upload_mb:g} MB of decoded images in all.",
            "oneOf": [
                {"type": "object", "required": ["image"], "properties": {"image": base64_image}},
                {"type": "object", "required": ["images"], "properties": {"images": {
                    "type": "array", "minItems": 1, "maxItems": settings.max_batch,
                    "items": base64_image}}},
                {"type": "object", "required": ["url"], "properties": {"url": url}}]}


def feedback_operation(settings) -> dict:
    """POST /feedback (app/feedback.py): a corrected label for an image, kept for training."""
    image = {"type": "string", "format": "binary"}
    return {
        "summary": "Store an image under its right class (FEEDBACK_DIR/<label>/) and log it"
                   + ("." if settings.feedback_dir else ": off on this server (FEEDBACK_DIR)."),
        "parameters": [{"name": "label", "in": "query", "required": False,
                        "schema": {"type": "string"},
                        "description": "The right class, when not sent as a form field."}],
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["label"],
                                               "properties": {"file": image,
                                                              "label": {"type": "string"}}}},
            "image/*": {"schema": image},
            "application/json": {"schema": json_request_schema(settings)},
        }},
        "responses": {
            "201": {"description": "Stored: the JSON line appended to feedback.jsonl.",
                    "content": {"application/json": {"schema": {"type": "object"}}}},
            "400": _error("invalid_label, missing_file, invalid_image or a JSON error"),
            "401": _error("unauthorized (only when the server has an API_KEY)"),
            "404": _error("feedback_disabled (no FEEDBACK_DIR)"),
            "413": _error("payload_too_large or image_too_large"),
            "415": _error("unsupported_media_type"),
            "503": _error("feedback_unavailable or model_unavailable"),
        },
    }


def openapi_document(service) -> dict:
    settings = service.settings
    predict = {
        "summary": "Classify one image, or several as one batch.",
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "array", "maxItems": settings.max_batch,
                                        "items": {"type": "string", "format": "binary"}}}}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": json_request_schema(settings)},
        }},
        "responses": {
            "200": {"description": "One `file`, a raw body, `image` or `url`: a Prediction. "
                    "Two or more images (`file` fields or `images`): a BatchPrediction.", "content": {"application/json": {"schema": {
                        "oneOf": [{"$ref": "#/components/schemas/Prediction"},
                                  {"$ref": "#/components/schemas/BatchPrediction"}]}}}},
            "400": _error("missing_file, invalid_image, invalid_json, invalid_field, "
                          "invalid_base64, or a url_* refusal"),
            "401": _error("unauthorized (only when the server has an API_KEY)"),
            "413": _error(f"payload_too_large (over {settings.max_upload_mb:g} MB or "
                          f"{settings.max_batch} files) or image_too_large (over "
                          f"{settings.max_image_pixels} pixels)"),
            "415": _error("unsupported_media_type"),
            "503": _error("model_unavailable"),
        },
    }
    if settings.api_key:
        predict["security"] = [{"bearer": []}, {"apiKey": []}]
    return {
        "openapi": "3.0.3",
        "info": {"title": "Image classifier", "version": "1.0.0",
                 "description": f"A fastai image classifier ({', '.join(service.info['vocab'])})."},
        "paths": {
            "/predict": {"post": predict},
            "/feedback": {"post": feedback_operation(settings)},
            "/model": {"get": {"summary": "The served model.",
                               "responses": {"200": _json("ModelInfo", "Model description")}}},
            "/healthz": {"get": {"summary": "Liveness.",
                                 "responses": {"200": _json("Status", "Alive")}}},
            "/readyz": {"get": {"summary": "Readiness: model loaded and warmed up.",
                                "responses": {"200": _json("Status", "Ready"),
                                              "503": _error("model_unavailable")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics.", "responses": {"200": {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document.",
                                      "responses": {"200": {"description": "OpenAPI 3"}}}},
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header",
                                           "name": "X-API-Key"}},
        },
    }
