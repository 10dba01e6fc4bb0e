"""The upload form: GET / shows it, POST / classifies without JavaScript, examples are one click.

With JavaScript on, static/app.js posts to /predict and draws the same result
without a reload; this module renders it on the server for everyone else.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

from flask import (Blueprint, abort, current_app, render_template, request, send_from_directory,
                   url_for)

from app.api import classify_uploads
from app.errors import ApiError
from app.uploads import Upload, uploads_from_request
from classifier.images import IMAGE_EXTENSIONS

bp = Blueprint("web", __name__)
MAX_EXAMPLES = 12
PREVIEW_PX = 480


def list_examples(folder: Path) -> list[dict]:
    """Up to MAX_EXAMPLES images from <model dir>/examples/<label>/, round-robin over labels."""
    if not folder.is_dir():
        return []
    per_label = [sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                        and p.is_file() and not p.name.startswith("."))
                 for sub in sorted(folder.iterdir()) if sub.is_dir()
                 and not sub.name.startswith(".")]
    picked = []
    while len(picked) < MAX_EXAMPLES and any(per_label):
        for files in per_label:
            if files and len(picked) < MAX_EXAMPLES:
                picked.append(files.pop(0))
    return [{"name": p.relative_to(folder).as_posix(), "label": p.parent.name} for p in picked]


def _examples() -> list[dict]:
    cache = current_app.extensions.setdefault("classifier_examples", {})
    if "list" not in cache:
        cache["list"] = list_examples(current_app.extensions["classifier"].settings.examples_dir)
    return cache["list"]


def preview_data_url(image) -> str:
    """A small JPEG of what the model saw, inline, so the no-JS page can show it."""
    thumb = image.copy()
    thumb.thumbnail((PREVIEW_PX, PREVIEW_PX))
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render_page(result=None, error=None, status: int = 200):
    service = current_app.extensions["classifier"]
    html = render_template("index.html", result=result, error=error, examples=_examples(),
                           vocab=service.info.get("vocab", []),
                           max_upload_mb=service.settings.max_upload_mb,
                           # "Wrong? The right answer is ..." (app/feedback.py), keyless only
                           feedback=service.settings.feedback_dir is not None
                           and not service.settings.api_key,
                           # With an API key the script leaves submission to the plain form.
                           predict_url=None if service.settings.api_key
                           else url_for("api.predict"))
    return current_app.response_class(html, status=status, mimetype="text/html")


def _example_upload(name: str) -> Upload:
    known = {e["name"] for e in _examples()}
    if name not in known:
        raise ApiError(400, "missing_file", "That example is not available.")
    folder = current_app.extensions["classifier"].settings.examples_dir
    return Upload(Path(name).name, (folder / name).read_bytes())


@bp.get("/")
def index():
    return render_page()


@bp.post("/")
def classify():
    example = request.form.get("example") if request.mimetype in (
        "multipart/form-data", "application/x-www-form-urlencoded") else None
    uploads = [_example_upload(example)] if example else \
        uploads_from_request(max_batch=1, allow_raw=False)
    (filename, preview, prediction), = classify_uploads(uploads, on_image=preview_data_url)
    bars = sorted(prediction.probabilities.items(), key=lambda kv: kv[1], reverse=True)
    return render_page(result={"filename": filename, "label": prediction.label,
                               "confidence": prediction.confidence, "bars": bars,
                               "image": preview})


@bp.get("/examples/<path:name>")
def example(name: str):
    if name not in {e["name"] for e in _examples()}:
        abort(404)
    folder = current_app.extensions["classifier"].settings.examples_dir
    return send_from_directory(folder, name, max_age=3600)
