"""POST /feedback: "Wrong? The right answer is ..." turned into training data (FEEDBACK_DIR).

Each correction stores the image's pixels once, by content, as
FEEDBACK_DIR/<label>/<sha256>.jpg (app/feedback_store.py: no metadata, under a quota), and
appends one JSON line to FEEDBACK_DIR/feedback.jsonl: time, client (API key id or
address), what the model predicts for the image, the label chosen, the model's sha256 and
the request id. The prediction is made here, from the image, so the log never depends on
what a client claims.

The image comes as /predict takes it (a multipart `file`, a raw image/* body or JSON
{"image": ...}), or as an `image` form field holding a data: URL (the result page's
own photo); the label as a `label` form field or `?label=`. Off (404) without
FEEDBACK_DIR. Without an API key, a browser's post must come from this site's own page
(app/security.py). `?from_page=1` (the page's form without JavaScript) answers with the
page: a redirect back on success, the error page otherwise.
"""
from __future__ import annotations

import datetime as dt
import logging

from flask import Blueprint, g, jsonify, redirect, request, url_for

from app import feedback_store
from app.config import app_settings
from app.errors import ApiError
from app.json_uploads import decode_base64
from app.limits import charge, client_id
from app.model_service import model_service
from app.security import check_api_key, check_same_site
from app.uploads import FIELD, Upload, uploads_from_request

log = logging.getLogger(__name__)
bp = Blueprint("feedback", __name__)


def _image_upload(settings) -> Upload:
    form_image = request.form.get("image") if request.mimetype == "multipart/form-data" \
        else None
    if form_image and not request.files.get("file"):
        data = decode_base64(form_image, "image")
        if len(data) > settings.max_content_length:
            raise ApiError("payload_too_large", "The image is too large.")
        return Upload("image", data)
    return uploads_from_request(max_batch=1, form_fields=(FIELD, "label", "image"))[0]


def _label(vocab: list[str]) -> str:
    label = request.form.get("label") if request.mimetype == "multipart/form-data" else None
    return feedback_store.check_label(label or request.args.get("label"), vocab)


@bp.route("/feedback", methods=["POST"])
def feedback():
    service, settings = model_service(), app_settings()
    if settings.feedback_dir is None:
        raise ApiError("feedback_disabled", "Corrections are not collected on this "
                       "server (set FEEDBACK_DIR to turn them on).")
    charge("feedback")
    check_api_key(settings.api_key)
    if not settings.api_key:  # with one, a page elsewhere cannot send it
        check_same_site()
    label = _label(list(service.info["vocab"]))
    upload = _image_upload(settings)
    model = service.model  # one model for the whole request, whatever a swap does meanwhile
    # The same checks as /predict; the stored copy is made from the decoded pixels.
    item, jpeg = service.prepare(upload.data, on_image=feedback_store.pixels_only, model=model)
    (prediction,) = service.predict([item], model)
    record = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "client": client_id(settings), "label": label, "predicted": prediction.label,
              "confidence": prediction.confidence, "model_sha256": model.card.sha256,
              "request_id": g.get("request_id")}
    try:
        record = feedback_store.save(settings, label, jpeg, record)
    except OSError as exc:  # a new, root-owned volume (docs/deploy.md), a bucket away
        log.error("cannot save a correction under %s: %s", settings.feedback_dir, exc)
        raise ApiError("feedback_unavailable", "The correction could not be saved (this "
                       "server's FEEDBACK_DIR is not writable or its store does not answer); "
                       "it was not recorded; send it again later.") from None
    if request.args.get("from_page"):  # the result page's form, without JavaScript
        return redirect(url_for("web.index", feedback="saved"), 303)
    return jsonify(record), 201
