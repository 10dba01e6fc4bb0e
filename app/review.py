"""/review: a person labels the queued images (app/review_queue.py) one by one.

GET /review is the page: the oldest queued image, big, with the model's top classes as
buttons numbered 1-9, every class in a list, and Discard. Without JavaScript each button
posts a plain form and the server redirects back to the next image; static/review.js
posts in the background, shows the next image (preloaded) at once and answers keys 1-9,
0 and x. GET /review/items.json and POST /review/items/<id> are its JSON. Behind the API
key (app/review_access.py: a sign-in form and a cookie, or the key's header); registered
only with REVIEW_DIR set.
"""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, redirect, render_template, request, url_for

from app import feedback_store, review_access
from app.config import app_settings
from app.errors import ApiError, error_response
from app.limits import charge, client_id
from app.model_service import model_service
from app.security import check_same_site

bp = Blueprint("review", __name__)
NUMBERED = 9  # the top classes with a number key
PRELOAD = 5  # items the page's script holds ahead (items.json's default count)
MAX_ITEMS = 50
PAGE_ENDPOINTS = ("review.page", "review.login", "review.logout")  # HTML whatever Accept says


def _queue():
    return model_service().review


def _wants_page() -> bool:
    """A browser's plain form (redirects, pages), not the script or an API client (JSON)."""
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html" and request.accept_mimetypes[best] > \
        request.accept_mimetypes["application/json"]


def _render(item=None, error=None, signed_in=True, status=200):
    vocab = list(model_service().info["vocab"])
    remaining = _queue().files.usage()[1] if signed_in else 0
    html = render_template("review.html", item=item, error=error, signed_in=signed_in,
                           vocab=vocab, numbered=NUMBERED, remaining=remaining,
                           preload=PRELOAD)
    return Response(html, status=status, mimetype="text/html")


@bp.errorhandler(ApiError)
def _error(exc: ApiError):
    """The page for people (sign-in, sign-out, plain forms); JSON for the script and APIs."""
    if request.endpoint not in PAGE_ENDPOINTS and not _wants_page():
        return error_response(exc.code, exc.message, exc.headers)
    signed_in = exc.code != "unauthorized"
    return _render(error={"code": exc.code, "message": exc.message}, signed_in=signed_in,
                   status=exc.status)


def _check_access(post: bool = False) -> None:
    if post:
        check_same_site()
    if not review_access.allowed(app_settings().api_key):
        raise ApiError("unauthorized", "Sign in with this server's API key to review "
                       "images (or send it as 'Authorization: Bearer <key>').")


def _with_image_url(record: dict) -> dict:
    return {**record, "image_url": url_for("review.image", item_id=record["id"])}


@bp.get("/review")
def page():
    if not review_access.allowed(app_settings().api_key):
        return _render(signed_in=False)  # the sign-in form
    items = _queue().next_items(1)
    return _render(item=_with_image_url(items[0]) if items else None)


@bp.post("/review/login")
def login():
    check_same_site()  # no other site signs a visitor in
    charge("feedback")
    key = app_settings().api_key
    if not review_access.key_matches(request.form.get("key", ""), key):
        raise ApiError("unauthorized", "That is not this server's API key.")
    return review_access.start_session(redirect(url_for("review.page"), 303), key)


@bp.post("/review/logout")
def logout():
    check_same_site()
    return review_access.end_session(redirect(url_for("review.page"), 303))


@bp.get("/review/items.json")
def items():
    _check_access()
    count = request.args.get("count", str(PRELOAD))
    if not count.isdigit() or not 1 <= int(count) <= MAX_ITEMS:
        raise ApiError("invalid_parameter", f"count must be a whole number from 1 to "
                       f"{MAX_ITEMS}.")
    skip = frozenset(filter(None, request.args.get("skip", "").split(",")))
    queue = _queue()
    return jsonify(items=[_with_image_url(r) for r in queue.next_items(int(count), skip)],
                   remaining=queue.files.usage()[1])


@bp.get("/review/items/<item_id>.jpg")
def image(item_id: str):
    _check_access()
    response = Response(_queue().image(item_id), mimetype="image/jpeg")
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


@bp.post("/review/items/<item_id>")
def review_item(item_id: str):
    """File the item under the form's `label`, or discard it (`discard`)."""
    _check_access(post=True)
    queue, settings = _queue(), app_settings()
    if request.form.get("discard"):
        queue.discard(item_id)
        answer = {"id": item_id, "outcome": "discarded"}
    else:
        label = feedback_store.check_label(request.form.get("label"),
                                           list(model_service().info["vocab"]))
        correction = queue.label(item_id, label, client_id(settings))
        answer = {"id": item_id, "outcome": "labelled", "correction": correction}
    if _wants_page():
        return redirect(url_for("review.page"), 303)
    return jsonify(answer)
