"""The OpenAPI 3 document of the service (GET /openapi.json, and /docs for people).

Checked against real answers by the tests. Each operation carries curl and Python
examples (`x-codeSamples`, the key Redoc and others read), written for the server's
own address.
"""
from __future__ import annotations

from app.errors import ERRORS
from app.options import PARAMETERS

# The error codes of the JSON and URL inputs (app/json_uploads.py, app/url_fetch.py).
JSON_CODES = ("invalid_json", "invalid_field", "invalid_base64")
URL_CODES = ("url_fetch_disabled", "url_not_allowed", "url_blocked_address",
             "url_too_many_redirects", "url_fetch_failed", "url_too_large", "url_not_image")


def _errors(*codes: str, notes: dict | None = None) -> dict:
    """Responses for these error codes, grouped by their status in errors.ERRORS."""
    by_status: dict[str, list[str]] = {}
    for code in codes:
        text = code + (f" ({notes[code]})" if notes and code in notes else "")
        by_status.setdefault(str(ERRORS[code]), []).append(text)
    return {status: {"description": " or ".join(texts), "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}
        for status, texts in sorted(by_status.items())}


def _json(ref: str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _html(description: str) -> dict:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


PROBABILITY = {"type": "number", "minimum": 0, "maximum": 1}
SCHEMAS = {
    "Prediction": {
        "type": "object",
        "required": ["label", "index", "confidence", "unsure", "threshold", "top",
                     "probabilities"],
        "properties": {
            "label": {"type": "string", "description": "Top-1 class (also when unsure)."},
            "index": {"type": "integer", "minimum": 0, "description": "Its index in vocab."},
            "confidence": {**PROBABILITY, "description": "Probability of the top class."},
            "unsure": {"type": "boolean", "description": "True when confidence < threshold: "
                       "treat the label as the closest match, not an answer."},
            "threshold": {**PROBABILITY, "nullable": True, "description": "The threshold "
                          "applied: ?threshold=, else UNSURE_THRESHOLD, else the model's "
                          "(export.json); null when there is none (never unsure)."},
            "top": {"type": "array", "minItems": 1, "description": "The top_k most probable "
                    "classes, highest first.", "items": {"$ref": "#/components/schemas/Ranked"}},
            "probabilities": {"type": "object", "description": "Every class, in vocab order; "
                              "sums to 1.", "additionalProperties": PROBABILITY},
            "explanation": {"$ref": "#/components/schemas/Explanation"},
        },
    },
    "Ranked": {"type": "object", "required": ["label", "probability"],
               "properties": {"label": {"type": "string"}, "probability": PROBABILITY}},
    "Explanation": {
        "type": "object", "required": ["method", "label", "image"],
        "description": "Only with ?explain=1: what the model looked at.",
        "properties": {
            "method": {"type": "string", "enum": ["grad-cam"]},
            "label": {"type": "string", "description": "The class explained (the top class)."},
            "image": {"type": "string", "pattern": "^data:image/png;base64,",
                      "description": "The photo as the model saw it (resized and cropped), "
                      "with a heatmap over it: red is what pushed it most towards label."},
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
                                 "properties": {"code": {"type": "string", "enum": list(ERRORS)},
                                                "message": {"type": "string"}}}},
    },
    "ModelInfo": {
        "type": "object",
        "required": ["vocab", "arch", "image_size", "metrics", "sha256", "created_at", "runtime",
                     "metadata", "recall", "train_images", "unsure", "explanations"],
        "properties": {
            "vocab": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "arch": {"type": "string"},
            "image_size": {"type": "array", "nullable": True, "items": {"type": "integer"},
                           "minItems": 2, "maxItems": 2, "description": "[height, width]"},
            "metrics": {"type": "object", "description": "Metrics from export.json: "
                        "validation (and test) accuracy, per-class precision and recall, "
                        "confusion matrix (empty for a notebook export)."},
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "created_at": {"type": "string"},
            "runtime": {"type": "string", "enum": ["onnx", "torch", "onnx-lean"]},
            "file": {"type": "string"},
            "metadata": {"type": "boolean", "description": "Whether export.json was found "
                         "(false for a notebook export)."},
            "recall": {"type": "object", "additionalProperties": PROBABILITY,
                       "description": "Validation recall per class (empty without export.json)."},
            "train_images": {"type": "integer", "nullable": True, "minimum": 0},
            "unsure": {"type": "object", "required": ["threshold", "source", "method"],
                       "properties": {
                           "threshold": {**PROBABILITY, "nullable": True},
                           "source": {"type": "string", "nullable": True,
                                      "enum": ["UNSURE_THRESHOLD", "export.json", None]},
                           "method": {"type": "string", "nullable": True,
                                      "description": "How training chose it."}}},
            "explanations": {"type": "boolean", "description": "Whether ?explain=1 works."},
        },
    },
    "Status": {"type": "object", "required": ["status"],
               "properties": {"status": {"type": "string"}, "runtime": {"type": "string"}}},
}


def code_samples(method: str, url: str, api_key: bool = False, upload: bool = False,
                 text: bool = False) -> list[dict]:
    """curl and Python (requests) for one call; `upload` sends photo.jpg as `file`."""
    auth = ' -H "Authorization: Bearer $API_KEY"' if api_key else ""
    py_auth = ', headers={"Authorization": "Bearer " + os.environ["API_KEY"]}' if api_key else ""
    py_head = "import os\n\nimport requests\n" if api_key else "import requests\n"
    shown = "r.text" if text else "r.json()"
    if upload:
        curl = f'curl -s{auth} -F file=@photo.jpg "{url}"'
        python = (f'{py_head}\nwith open("photo.jpg", "rb") as photo:\n'
                  f'    r = requests.post("{url}", files={{"file": photo}}{py_auth})\n'
                  f'print({shown})')
    else:
        curl = f'curl -s{auth} {"-X " + method.upper() + " " if method != "get" else ""}"{url}"'
        python = f'{py_head}\nr = requests.{method}("{url}"{py_auth})\nprint({shown})'
    return [{"lang": "curl", "label": "curl", "source": curl},
            {"lang": "Python", "label": "Python", "source": python}]


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


def feedback_operation(settings, base_url: str) -> dict:
    """POST /feedback (app/feedback.py): a corrected label for an image, kept for training."""
    image = {"type": "string", "format": "binary"}
    return {
        "x-codeSamples": code_samples("post", f"{base_url}/feedback?label=LABEL",
                                      api_key=bool(settings.api_key), upload=True),
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
            **_errors("invalid_label", "missing_file", "invalid_image", *JSON_CODES,
                      "unauthorized", "feedback_disabled", "payload_too_large",
                      "image_too_large", "unsupported_media_type", "feedback_unavailable",
                      "model_unavailable", notes={
                          "unauthorized": "only when the server has an API_KEY",
                          "feedback_disabled": "no FEEDBACK_DIR"}),
        },
    }


def openapi_document(service, settings, base_url: str = "http://localhost:8000") -> dict:
    base_url = base_url.rstrip("/")
    predict = {
        "summary": "Classify one image, or several as one batch.",
        "description": "Every answer carries the top class, whether it is `unsure`, the "
                       "`top` classes and every class's probability; `explain=1` adds a "
                       "Grad-CAM heatmap.",
        "parameters": [
            {"name": "top_k", "in": "query", "required": False, "description":
             PARAMETERS["top_k"], "schema": {"type": "integer", "minimum": 1}},
            {"name": "threshold", "in": "query", "required": False, "description":
             PARAMETERS["threshold"], "schema": PROBABILITY},
            {"name": "explain", "in": "query", "required": False, "description":
             PARAMETERS["explain"], "schema": {"type": "string",
                                               "enum": ["1", "0", "true", "false"]}},
        ],
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
            **_errors("missing_file", "invalid_image", "invalid_parameter", *JSON_CODES,
                      *URL_CODES, "unauthorized",
                      "explanation_unavailable", "payload_too_large", "image_too_large",
                      "unsupported_media_type", "model_unavailable", notes={
                          "invalid_parameter": "top_k, threshold or explain out of range",
                          "unauthorized": "only when the server has an API_KEY",
                          "explanation_unavailable": "explain=1 on a server without the "
                                                     "PyTorch model (EXPLANATIONS=off)",
                          "payload_too_large": f"over {settings.max_upload_mb:g} MB or "
                                               f"{settings.max_batch} files",
                          "image_too_large": f"over {settings.max_image_pixels} pixels"}),
        },
        "x-codeSamples": code_samples("post", f"{base_url}/predict?top_k=3",
                                      api_key=bool(settings.api_key), upload=True),
    }
    if settings.api_key:
        predict["security"] = [{"bearer": []}, {"apiKey": []}]

    def get(summary: str, path: str, responses: dict, text: bool = False) -> dict:
        return {"get": {"summary": summary, "responses": responses,
                        "x-codeSamples": code_samples("get", base_url + path, text=text)}}

    return {
        "openapi": "3.0.3",
        "info": {"title": "Image classifier", "version": "1.1.0",
                 "description": f"A fastai image classifier ({', '.join(service.info['vocab'])})."},
        "servers": [{"url": base_url}],
        "paths": {
            "/predict": {"post": predict},
            "/feedback": {"post": feedback_operation(settings, base_url)},
            "/model": get("The served model: classes, metrics, threshold (the page's model "
                          "card).", "/model", {"200": _json("ModelInfo", "Model description")}),
            "/healthz": get("Liveness.", "/healthz", {"200": _json("Status", "Alive")}),
            "/readyz": get("Readiness: model loaded and warmed up.", "/readyz",
                           {"200": _json("Status", "Ready"), **_errors("model_unavailable")}),
            "/metrics": get("Prometheus metrics.", "/metrics", {"200": {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}, text=True),
            "/report": get("The training report (report/report.html beside the model), when "
                           "training wrote one; its images are under /report/.", "/report",
                           {"200": _html("The report"), **_errors("not_found")}, text=True),
            "/docs": get("This API, for people.", "/docs", {"200": _html("This page")},
                         text=True),
            "/openapi.json": get("This document.", "/openapi.json",
                                 {"200": {"description": "OpenAPI 3"}}),
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header",
                                           "name": "X-API-Key"}},
        },
    }
