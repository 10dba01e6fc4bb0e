"""The upload form: GET / shows it, POST / classifies without JavaScript, examples are one click.

With JavaScript on, static/app.js posts to /predict and draws the same result
without a reload; this module renders it on the server for everyone else.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

from flask import (
    Blueprint,
    abort,
    current_app,
    render_template,
    request,
    send_from_directory,
    url_for,
)

from app.config import app_settings
from app.errors import HTML_PAGE, ApiError
from app.limits import charge, charge_explanations
from app.model_service import model_service
from app.options import answer_options
from app.uploads import Upload, uploads_from_request
from classifier.image_files import FORMAT_NAMES, FORMATS, find_image_files

bp = Blueprint("web", __name__)


@bp.record_once
def _render_errors_as_page(state) -> None:
    """Errors on the form's pages (and lost browsers) come back as this page."""
    state.app.extensions[HTML_PAGE] = render_page
MAX_EXAMPLES = 12
# The file picker's filter: browsers may not count HEIC or AVIF as image/*, so every suffix too.
UPLOAD_ACCEPT = ",".join(["image/*", *(suffix for f in FORMATS for suffix in f.suffixes)])
PREVIEW_PX = 480


def list_examples(folder: Path) -> list[dict]:
    """Up to MAX_EXAMPLES images from <model dir>/examples/<label>/, round-robin over labels."""
    by_label: dict[Path, list[Path]] = {}
    for path in find_image_files(folder):
        if path.parent.parent == folder:
            by_label.setdefault(path.parent, []).append(path)
    per_label = list(by_label.values())
    picked = []
    while len(picked) < MAX_EXAMPLES and any(per_label):
        for files in per_label:
            if files and len(picked) < MAX_EXAMPLES:
                picked.append(files.pop(0))
    return [{"name": p.relative_to(folder).as_posix(), "label": p.parent.name} for p in picked]


def _examples() -> list[dict]:
    cache = current_app.extensions.setdefault("classifier_examples", {})  # by folder: a swap
    folder = model_service().examples_dir                                # brings its own
    if folder not in cache:
        cache[folder] = list_examples(folder)
    return cache[folder]


def preview_data_url(image) -> str:
    """A small JPEG of what the model saw, inline, so the no-JS page can show it."""
    thumb = image.copy()
    thumb.thumbnail((PREVIEW_PX, PREVIEW_PX))
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def model_card(info: dict) -> dict:
    """What the page tells about the model, from GET /model's description (export.json)."""
    missing = "not recorded" if info["metadata"] else "unknown (notebook export: no export.json)"

    def accuracy(split: str, absent: str = missing) -> str:
        value = (info["metrics"].get(split) or {}).get("accuracy")
        return absent if value is None else f"{value * 100:.1f}%"

    size, unsure = info["image_size"], info["unsure"]
    return {
        "rows": [
            ("Classes", ", ".join(info["vocab"])),
            ("Validation accuracy", accuracy("validation")),
            ("Test accuracy", accuracy("test", "no test set" if info["metadata"] else missing)),
            ("Training images", missing if info["train_images"] is None
             else str(info["train_images"])),
            ("Created", info["created_at"][:10] + ("" if info["metadata"] else " (file date)")),
            ("Architecture", info["arch"]),
            ("Input size", f"{size[1]} × {size[0]} px" if size else "as uploaded"),
            ("Not-sure threshold", "none: every answer is given as sure"
             if unsure["threshold"] is None
             else f"{unsure['threshold'] * 100:.1f}% (from {unsure['source']})"),
        ],
        "recall": [(label, f"{value * 100:.1f}%") for label, value in info["recall"].items()],
    }


def render_page(result=None, error=None, status: int = 200):
    service, settings = model_service(), app_settings()
    html = render_template("index.html", result=result, error=error, examples=_examples(),
                           vocab=service.info.get("vocab", []),
                           formats=FORMAT_NAMES, accept=UPLOAD_ACCEPT,
                           card=model_card(service.info),
                           report_url=url_for("pages.report") if service.report_dir else None,
                           explanations=service.info["explanations"],
                           max_upload_mb=settings.max_upload_mb,
                           decode_side=service.decode_min_side,
                           # "Wrong? The right answer is ..." (app/feedback.py), keyless only
                           feedback=settings.feedback_dir is not None
                           and not settings.api_key,
                           # With an API key the script leaves submission to the plain form.
                           predict_url=None if settings.api_key
                           else url_for("api.predict"))
    return current_app.response_class(html, status=status, mimetype="text/html")


def _example_upload(name: str) -> Upload:
    known = {e["name"] for e in _examples()}
    if name not in known:
        raise ApiError("missing_file", "That example is not available.")
    folder = model_service().examples_dir
    return Upload(Path(name).name, (folder / name).read_bytes())


@bp.get("/")
def index():
    return render_page()


@bp.post("/")
def classify():
    charge("predict")
    example = request.form.get("example") if request.mimetype in (
        "multipart/form-data", "application/x-www-form-urlencoded") else None
    uploads = [_example_upload(example)] if example else \
        uploads_from_request(max_batch=1, allow_raw=False)
    service = model_service()
    options = answer_options(request.form, len(service.info["vocab"]), service.threshold)
    if options.explain:
        charge_explanations(len(uploads))
    (result,) = service.classify(uploads, on_image=preview_data_url, explain=options.explain)
    prediction = result.prediction
    bars = [(c["label"], c["probability"]) for c in prediction.top(len(prediction.probabilities))]
    return render_page(result={"filename": result.filename, "label": prediction.label,
                               "confidence": prediction.confidence, "bars": bars,
                               "unsure": prediction.is_unsure(options.threshold),
                               "explanation": result.explanation, "image": result.extra,
                               "version": result.version})


@bp.get("/examples/<path:name>")
def example(name: str):
    if name not in {e["name"] for e in _examples()}:
        abort(404)
    folder = model_service().examples_dir
    return send_from_directory(folder, name, max_age=3600)
