"""The OpenAPI 3 document of the service (GET /openapi.json, and /docs for people).

Closed, as its answers are (app/openapi_schemas.py): a request body with a field it does
not list is refused, and says so. The tests check every JSON answer against it, and
schemathesis fuzzes the real server from it. Each operation carries curl and Python
examples (`x-codeSamples`, the key Redoc and others read), written for the server's own
address.
"""
from __future__ import annotations

from app.errors import ERRORS
from app.openapi_schemas import COUNT, LABEL, PROBABILITY, SHA256, closed, ref, schemas
from app.options import PARAMETERS
from app.version import VERSION

# The error codes of the JSON and URL inputs (app/json_uploads.py, app/url_fetch.py).
JSON_CODES = ("invalid_json", "invalid_field", "invalid_base64")
URL_CODES = ("url_fetch_disabled", "url_not_allowed", "url_unreachable",
             "url_too_many_redirects", "url_fetch_failed", "url_too_large", "url_not_image")
# What any upload can run into, besides its own shape.
UPLOAD_CODES = ("missing_file", "invalid_image", "bad_request", *JSON_CODES, "unauthorized",
                "payload_too_large", "image_too_large", "unsupported_media_type",
                "model_unavailable", "busy")
IMAGE = {"type": "string", "format": "binary", "description": "An image file: JPEG, PNG, "
         "GIF, WebP, BMP, TIFF, HEIF or AVIF."}


def _errors(*codes: str, notes: dict | None = None) -> dict:
    """Responses for these error codes, grouped by their status in errors.ERRORS."""
    by_status: dict[str, list[str]] = {}
    for code in codes:
        text = code + (f" ({notes[code]})" if notes and code in notes else "")
        by_status.setdefault(str(ERRORS[code]), []).append(text)
    return {status: {"description": " or ".join(texts), "content": {"application/json": {
        "schema": ref("Error")}}}
        for status, texts in sorted(by_status.items())}


def _json(schema: str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": ref(schema)}}}


def _html(description: str) -> dict:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def code_samples(method: str, url: str, api_key: bool = False, upload: bool = False,
                 text: bool = False, save_as: str | None = None) -> list[dict]:
    """curl and Python (requests) for one call; `upload` sends photo.jpg as `file`;
    `save_as` writes the answer to that file."""
    auth = ' -H "Authorization: Bearer $API_KEY"' if api_key else ""
    py_auth = ', headers={"Authorization": "Bearer " + os.environ["API_KEY"]}' if api_key else ""
    py_head = "import os\n\nimport requests\n" if api_key else "import requests\n"
    shown = "r.text" if text else "r.json()"
    if save_as:
        curl = f'curl -s -o {save_as} "{url}"'
        python = (f'{py_head}\nr = requests.get("{url}")\n'
                  f'with open("{save_as}", "wb") as out:\n    out.write(r.content)')
    elif upload:
        curl = f'curl -s{auth} -F file=@photo.jpg "{url}"'
        python = (f'{py_head}\nwith open("photo.jpg", "rb") as photo:\n'
                  f'    r = requests.post("{url}", files={{"file": photo}}{py_auth})\n'
                  f'print({shown})')
    else:
        curl = f'curl -s{auth} {"-X " + method.upper() + " " if method != "get" else ""}"{url}"'
        python = f'{py_head}\nr = requests.{method}("{url}"{py_auth})\nprint({shown})'
    return [{"lang": "curl", "label": "curl", "source": curl},
            {"lang": "Python", "label": "Python", "source": python}]


def json_request_schema(settings, max_images: int, urls: bool) -> dict:
    """A JSON body of images (app/json_uploads.py): exactly one of `image`, `images` (at most
    `max_images`) and, when `urls`, `url`."""
    base64_image = {"type": "string", "format": "byte", "description": "Standard or URL-safe "
                    "base64, or a data: URL (data:image/png;base64,...)."}
    shapes = [closed({"image": base64_image}, ["image"]),
              closed({"images": {"type": "array", "minItems": 1, "maxItems": max_images,
                                 "items": base64_image}}, ["images"])]
    if urls:
        shapes.append(closed({"url": {"type": "string", "format": "uri", "description":
                                      "http(s) URL of an image, fetched by the server."}},
                             ["url"]))
    return {"description": f"At most {settings.max_upload_mb:g} MB of decoded images in all.",
            "oneOf": shapes}


def upload_body(settings, multipart: dict, max_images: int, urls: bool) -> dict:
    """The three ways to send images: a multipart form, a raw image/* body, JSON."""
    return {"required": True, "content": {
        "multipart/form-data": {"schema": multipart},
        "image/*": {"schema": IMAGE},
        "application/json": {"schema": json_request_schema(settings, max_images, urls)}}}


def feedback_operation(settings, base_url: str) -> dict:
    """POST /feedback (app/feedback.py): a corrected label for an image, kept for training."""
    return {
        "x-codeSamples": code_samples("post", f"{base_url}/feedback?label=LABEL",
                                      api_key=bool(settings.api_key), upload=True),
        "summary": "Store an image under its right class (FEEDBACK_DIR/<label>/) and log it"
                   + ("." if settings.feedback_dir else ": off on this server (FEEDBACK_DIR)."),
        "parameters": [{"name": "label", "in": "query", "required": True, "schema": LABEL,
                        "description": "The right class."}],
        "requestBody": upload_body(settings, closed({"file": IMAGE}, ["file"]), 1, urls=False),
        "responses": {
            "201": _json("Feedback", "Stored: the line appended to feedback.jsonl."),
            **_errors("invalid_label", *UPLOAD_CODES, "feedback_disabled",
                      "feedback_unavailable", "cross_site_request", "rate_limited",
                      "feedback_full", notes={
                          "unauthorized": "only when the server has an API_KEY",
                          "feedback_disabled": "no FEEDBACK_DIR",
                          "cross_site_request": "a browser's post from another site",
                          "rate_limited": f"over {settings.feedback_rate} per client; "
                                          "see Retry-After"}),
        },
    }


def review_paths(base_url: str) -> dict:
    """/review's JSON (app/review.py), for its page's script and for scripts with the key."""
    item_id = {"name": "item_id", "in": "path", "required": True, "schema": SHA256}
    auth = {"security": [{"bearer": []}, {"apiKey": []}]}
    item = closed({
        "id": SHA256, "time": {"type": "string", "format": "date-time"},
        "reason": {"type": "string", "enum": ["unsure", "sample"]}, "label": LABEL,
        "confidence": PROBABILITY, "top": {"type": "array", "items": ref("Ranked")},
        "version": {"type": "string"}, "model_sha256": SHA256,
        "request_id": {"type": "string", "nullable": True},
        "image_url": {"type": "string"}}, ["id", "label", "top", "image_url"])
    return {
        "/review/items.json": {"get": {
            **auth, "summary": "The oldest queued images to label (REVIEW_DIR).",
            "parameters": [{"name": "count", "in": "query", "schema": {
                                "type": "integer", "minimum": 1, "maximum": 50, "default": 5}},
                           {"name": "skip", "in": "query", "schema": {"type": "string"},
                            "description": "Comma-separated ids to leave out."}],
            "responses": {"200": {"description": "Queued items, oldest first", "content": {
                "application/json": {"schema": closed({
                    "items": {"type": "array", "items": item}, "remaining": COUNT},
                    ["items", "remaining"])}}},
                **_errors("unauthorized", "invalid_parameter")},
            "x-codeSamples": code_samples("get", f"{base_url}/review/items.json",
                                          api_key=True)}},
        "/review/items/{item_id}.jpg": {"get": {
            **auth, "summary": "A queued image, as the model saw it.", "parameters": [item_id],
            "responses": {"200": {"description": "The image", "content": {"image/jpeg": {
                "schema": IMAGE}}}, **_errors("unauthorized", "review_item_gone")}}},
        "/review/items/{item_id}": {"post": {
            **auth, "summary": "File a queued image under `label` (a correction in "
                               "FEEDBACK_DIR, as /feedback stores them) or `discard` it.",
            "parameters": [item_id],
            "requestBody": {"content": {"application/x-www-form-urlencoded": {
                "schema": closed({"label": LABEL, "discard": {"type": "string"}})}}},
            "responses": {"200": {"description": "Done", "content": {"application/json": {
                "schema": closed({"id": SHA256, "outcome": {
                    "type": "string", "enum": ["labelled", "discarded"]},
                    "correction": ref("Feedback")}, ["id", "outcome"])}}},
                **_errors("unauthorized", "invalid_label", "cross_site_request",
                          "review_item_gone", "feedback_full", "feedback_unavailable")}}},
    }


def predict_operation(settings, base_url: str) -> dict:
    """POST /predict (app/api.py)."""
    def query(name: str, schema: dict) -> dict:
        return {"name": name, "in": "query", "required": False,
                "description": PARAMETERS[name], "schema": schema}

    multipart = closed({"file": {"type": "array", "minItems": 1, "maxItems": settings.max_batch,
                                 "items": IMAGE}}, ["file"])
    url_codes = URL_CODES if settings.allow_url_fetch else ("url_fetch_disabled",)
    return {
        "summary": "Classify one image, or several as one batch.",
        "description": "Every answer carries the top class, whether it is `unsure`, the "
                       "`top` classes and every class's probability; `explain=1` adds a "
                       "Grad-CAM heatmap." + ("" if settings.allow_url_fetch else
                                              " This server does not fetch URLs "
                                              "(ALLOW_URL_FETCH)."),
        "parameters": [query("top_k", {"type": "integer", "minimum": 1}),
                       query("threshold", PROBABILITY),
                       query("explain", {"type": "string",
                                         "enum": ["1", "0", "true", "false"]})],
        "requestBody": upload_body(settings, multipart, settings.max_batch,
                                   settings.allow_url_fetch),
        "responses": {
            "200": {"description": "One `file`, a raw body, `image` or `url`: a Prediction. "
                    "Two or more images (`file` fields or `images`): a BatchPrediction.",
                    "content": {"application/json": {"schema": {"oneOf": [
                        ref("Prediction"), ref("BatchPrediction")]}}}},
            **_errors(*UPLOAD_CODES, "invalid_parameter", *url_codes,
                      "explanation_unavailable", "explanations_loading",
                      "too_many_explanations", "rate_limited", notes={
                          "bad_request": "the upload could not be read",
                          "invalid_parameter": "top_k, threshold or explain out of range",
                          "too_many_explanations": f"explain=1 on over "
                                                   f"{settings.max_explanations} images",
                          "rate_limited": f"over {settings.predict_rate} requests or "
                                          f"{settings.explain_rate} explained images per "
                                          "client; see Retry-After",
                          "unauthorized": "only when the server has an API_KEY",
                          "explanation_unavailable": "explain=1 on a server without the "
                                                     "PyTorch model (EXPLANATIONS=off)",
                          "explanations_loading": "explain=1 in the first seconds after "
                                                  "start-up, while PyTorch loads; see "
                                                  "Retry-After",
                          "payload_too_large": f"over {settings.max_upload_mb:g} MB or "
                                               f"{settings.max_batch} files",
                          "busy": f"the worker holds {settings.body_budget_mb:g} MB of "
                                  "bodies already; retry after Retry-After",
                          "image_too_large": f"over {settings.max_image_pixels} pixels"}),
        },
        "x-codeSamples": code_samples("post", f"{base_url}/predict?top_k=3",
                                      api_key=bool(settings.api_key), upload=True),
    }


def openapi_document(service, settings, base_url: str = "http://localhost:8000") -> dict:
    vocab = list(service.info["vocab"])
    base_url = base_url.rstrip("/")
    predict, feedback = predict_operation(settings, base_url), feedback_operation(settings,
                                                                                  base_url)
    if settings.api_key:
        predict["security"] = feedback["security"] = [{"bearer": []}, {"apiKey": []}]

    def get(summary: str, path: str, responses: dict, text: bool = False) -> dict:
        return {"get": {"summary": summary, "responses": responses,
                        "x-codeSamples": code_samples("get", base_url + path, text=text)}}

    return {
        "openapi": "3.0.3",
        "info": {"title": "Image classifier", "version": VERSION,
                 "description": f"A fastai image classifier ({', '.join(vocab)})."},
        "servers": [{"url": base_url}],
        "paths": {
            "/predict": {"post": predict},
            "/feedback": {"post": feedback},
            "/model": get("The served model: classes, metrics, threshold (the page's model "
                          "card).", "/model", {"200": _json("ModelInfo", "Model description")}),
            "/shadow": get("The shadow candidate's figures (SHADOW_MODEL): top-1 agreement "
                           "with the live model and its \"not sure\" rate, per version pair; "
                           "python -m training.compare --field reads it.", "/shadow",
                           {"200": _json("ShadowField", "Shadow figures")}),
            "/healthz": get("Liveness.", "/healthz", {"200": _json("Status", "Alive")}),
            "/readyz": get("Readiness: model loaded and warmed up.", "/readyz",
                           {"200": _json("Status", "Ready"), **_errors("model_unavailable")}),
            "/metrics": get("Prometheus metrics.", "/metrics", {"200": {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}, text=True),
            "/report": get("The training report (report/report.html beside the model), when "
                           "training wrote one; its images are under /report/.", "/report",
                           {"200": _html("The report"), **_errors("not_found")}, text=True),
            "/report/{name}": {"get": {
                "summary": "A file of the training report: its plots.",
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string"}, "example": "history.png",
                                "description": "As report.html names it: history.png, "
                                               "confusion_matrix.png, ..."}],
                "responses": {"200": {"description": "The plot", "content": {"image/png": {
                    "schema": {"type": "string", "format": "binary"}}}},
                    **_errors("not_found")},
                "x-codeSamples": code_samples("get", f"{base_url}/report/history.png",
                                              save_as="history.png")}},
            "/docs": get("This API, for people.", "/docs", {"200": _html("This page")},
                         text=True),
            "/openapi.json": get("This document.", "/openapi.json",
                                 {"200": {"description": "OpenAPI 3.0"}}),
            **(review_paths(base_url) if settings.review_dir else {}),
        },
        "components": {
            "schemas": schemas(vocab, settings.max_batch),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header",
                                           "name": "X-API-Key"}},
        },
    }
