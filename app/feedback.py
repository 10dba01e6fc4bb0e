"""POST /feedback: "Wrong? The right answer is ..." turned into training data (FEEDBACK_DIR).

Each correction stores the image once, by content, as FEEDBACK_DIR/<label>/<sha256>.<ext>
(the folder layout `python -m training.train DATA --extra FEEDBACK_DIR` reads), and
appends one JSON line to FEEDBACK_DIR/feedback.jsonl: time, what the model predicts for
the image, the label chosen, the model's sha256 and the request id. The prediction is
made here, from the image, so the log never depends on what a client claims.

The image comes as /predict takes it (a multipart `file`, a raw image/* body or JSON
{"image": ...}), or as an `image` form field holding a data: URL (the result page's
own photo); the label as a `label` form field or `?label=`. Off (404) without
FEEDBACK_DIR. `?from_page=1` (the page's form without JavaScript) answers with the page:
a redirect back on success, the error page otherwise.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import os
import threading
from pathlib import Path

from flask import Blueprint, g, jsonify, redirect, request, url_for
from PIL import Image

from app.config import app_settings
from app.errors import ApiError
from app.json_uploads import decode_base64
from app.model_service import model_service
from app.security import check_api_key
from app.uploads import FIELD, Upload, uploads_from_request
from classifier.images import ALLOWED_FORMATS, image_format
from classifier.model_files import atomic_path

log = logging.getLogger(__name__)
bp = Blueprint("feedback", __name__)
LOG_NAME = "feedback.jsonl"
_append_lock = threading.Lock()  # one line at a time per process (O_APPEND across processes)


def _image_upload(settings) -> Upload:
    form_image = request.form.get("image") if request.mimetype == "multipart/form-data" \
        else None
    if form_image and not request.files.get("file"):
        data = decode_base64(form_image, "image")
        if len(data) > settings.max_content_length:
            raise ApiError("payload_too_large", "The image is too large.")
        return Upload("image", data)
    return uploads_from_request(max_batch=1, form_fields=(FIELD, "label", "image"))[0]


def _label(vocab: list[str], folder: Path) -> str:
    label = request.form.get("label") if request.mimetype == "multipart/form-data" else None
    label = label or request.args.get("label")
    if not label:
        raise ApiError("invalid_label", f"Say which class is right: a `label` field or "
                       f"?label=, one of {', '.join(vocab)}.")
    if label not in vocab:
        raise ApiError("invalid_label", f"{label[:80]!r} is not one of the model's "
                       f"classes: {', '.join(vocab)}.")
    target = (folder / label).resolve()
    if target.parent != folder.resolve() or label.startswith("."):
        raise ApiError("invalid_label", f"{label[:80]!r} cannot be stored as a folder "
                       "name.")
    return label


def store_image(folder: Path, data: bytes, digest: str) -> Path:
    """folder/<sha256>.<ext>, written once (atomically); an existing copy is kept."""
    found = image_format(Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS).format)
    path = folder / f"{digest}{found.suffixes[0] if found else '.img'}"  # as --extra reads it
    if not path.exists():
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return path


def append_line(log_path: Path, record: dict) -> None:
    """One JSON line, written with a single append so concurrent workers never interleave."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with _append_lock:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


@bp.route("/feedback", methods=["POST"])
def feedback():
    service, settings = model_service(), app_settings()
    if settings.feedback_dir is None:
        raise ApiError("feedback_disabled", "Corrections are not collected on this "
                       "server (set FEEDBACK_DIR to turn them on).")
    check_api_key(settings.api_key)
    label = _label(list(service.info["vocab"]), settings.feedback_dir)
    upload = _image_upload(settings)
    item, _ = service.prepare(upload.data)  # the same checks as /predict
    (prediction,) = service.predict([item])
    digest = hashlib.sha256(upload.data).hexdigest()
    try:
        path = store_image(settings.feedback_dir / label, upload.data, digest)
        record = _record(settings.feedback_dir, path, digest, label, prediction, service)
        append_line(settings.feedback_dir / LOG_NAME, record)
    except OSError as exc:  # e.g. a new, root-owned volume (docs/deploy.md)
        log.error("cannot save a correction under %s: %s", settings.feedback_dir, exc)
        raise ApiError("feedback_unavailable", "The correction could not be saved on "
                       "this server (its FEEDBACK_DIR is not writable); it has been logged.") from None
    if request.args.get("from_page"):  # the result page's form, without JavaScript
        return redirect(url_for("web.index", feedback="saved"), 303)
    return jsonify(record), 201


def _record(folder: Path, path: Path, digest: str, label: str, prediction, service) -> dict:
    return {"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "image": path.relative_to(folder).as_posix(), "sha256": digest,
            "label": label, "predicted": prediction.label,
            "confidence": prediction.confidence, "model_sha256": service.info["sha256"],
            "request_id": g.get("request_id")}
