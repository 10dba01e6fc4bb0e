"""One error contract: {"error": {"code", "message"}} for the API, a friendly page for the form.

`ERRORS` is the one table of error code -> HTTP status: the handlers answer with
it and openapi.py documents it. Every failure a client can cause maps to a 4xx
here, including werkzeug's own (body too large, too many form parts, malformed
requests); anything else is a bug, logged with its traceback and answered with a
generic 500 that leaks nothing.
"""
from __future__ import annotations

import logging
import socket

from flask import current_app, jsonify, request
from werkzeug.exceptions import ClientDisconnected, HTTPException

from classifier.images import ImageError

log = logging.getLogger(__name__)

ERRORS = {
    "missing_file": 400,
    "invalid_image": 400,
    "invalid_parameter": 400,
    "bad_request": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "explanation_unavailable": 409,
    "payload_too_large": 413,
    "image_too_large": 413,
    "unsupported_media_type": 415,
    "internal_error": 500,
    "model_unavailable": 503,
    "too_many_connections": 503,    # over MAX_CONNECTIONS (app/worker.py, before any request)
    "busy": 503,                    # over BODY_BUDGET_MB (app/body_budget.py, before the body)
    "explanations_loading": 503,    # explain=1 while PyTorch loads behind the graph (app/explainer.py)
    # JSON and URL inputs (app/json_uploads.py, app/url_fetch.py)
    "invalid_json": 400,            # not JSON: malformed, not UTF-8, or nested too deeply
    "invalid_field": 400,           # a JSON field missing, unknown or of the wrong type
    "invalid_base64": 400,          # an image that is not valid base64
    "url_fetch_disabled": 400,      # {"url": ...} sent but ALLOW_URL_FETCH is off
    "url_not_allowed": 400,         # not http(s), a port not allowed, credentials, unparsable
    "url_unreachable": 400,         # not public, no address or no connection: one answer for all
    "url_too_many_redirects": 400,  # more than 3 redirects
    "url_fetch_failed": 400,        # reached, but TLS, a timeout, the deadline or an HTTP error
    "url_too_large": 400,           # the image at the URL is over MAX_UPLOAD_MB
    "url_not_image": 400,           # the URL answered with something that is not an image
    # POST /feedback (app/feedback.py)
    "feedback_disabled": 404,       # no FEEDBACK_DIR set
    "invalid_label": 400,           # the corrected label is not one of the model's classes
    "feedback_unavailable": 503,    # FEEDBACK_DIR cannot be written or its bucket does not answer
    "feedback_full": 507,           # FEEDBACK_MAX_MB or FEEDBACK_MAX_FILES reached
    "cross_site_request": 403,      # a browser's post that another site started
    # The review queue (app/review.py)
    "review_item_gone": 404,        # labelled or discarded already, or never queued
    # Per-client budgets (app/limits.py)
    "rate_limited": 429,            # over PREDICT_RATE, EXPLAIN_RATE or FEEDBACK_RATE
    "too_many_explanations": 400,   # ?explain=1 on more than MAX_EXPLANATIONS images
}
# werkzeug's HTTP errors get the code of their status; others become their lower_snake name.
HTTP_CODES = {ERRORS[code]: code for code in (
    "bad_request", "unauthorized", "not_found", "method_not_allowed", "payload_too_large",
    "unsupported_media_type", "model_unavailable")}

try:  # what gunicorn raises from wsgi.input on a malformed or cut-off body
    from gunicorn.http.errors import NoMoreData, ParseException
    BODY_ERRORS: tuple[type[Exception], ...] = (ParseException, NoMoreData)
except ImportError:  # not under gunicorn (flask run)
    BODY_ERRORS = ()
# (werkzeug turns an OSError from its limited stream, a read timeout included, into
# ClientDisconnected, a 400 that gets the same message.)
BODY_MESSAGE = ("The upload could not be read: it was malformed, cut off or too slow. "
                "Please try again.")
# Where the form registers the function that renders an error as its page.
HTML_PAGE = "classifier_error_page"


class ApiError(Exception):
    """A failure the client can act on; its HTTP status comes from ERRORS."""

    def __init__(self, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = ERRORS[code], code, message
        self.headers = headers or {}


class ModelUnavailable(ApiError):
    """The model cannot answer in this process right now (503, try again shortly)."""

    def __init__(self, message: str, retry_after: int = 5):
        super().__init__("model_unavailable", message, {"Retry-After": str(retry_after)})


def wants_html() -> bool:
    """The form's pages (and the feedback form's posts) get HTML; browsers on the docs and
    report pages, or lost on unknown URLs, too; everything else JSON."""
    if request.blueprint == "web" or (request.blueprint == "feedback"
                                      and request.args.get("from_page")):
        return True
    if request.url_rule is None or request.blueprint == "pages":
        best = request.accept_mimetypes.best_match(["application/json", "text/html"])
        return best == "text/html" and request.accept_mimetypes[best] > \
            request.accept_mimetypes["application/json"]
    return False


def error_response(code: str, message: str, headers=None, status: int | None = None):
    """The error as JSON, or as the form's page (see HTML_PAGE) for a browser."""
    status = status or ERRORS.get(code, 400)
    render_page = current_app.extensions.get(HTML_PAGE) if wants_html() else None
    if render_page is not None:
        response = render_page(error={"code": code, "message": message}, status=status)
    else:
        response = jsonify(error={"code": code, "message": message})
        response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _http_message(exc: HTTPException) -> str:
    if exc.code == 413:
        limit = request.max_content_length
        return (f"The request is too large: at most {limit / 2**20:g} MB in all, "
                f"with at most {request.max_form_parts} form parts.") if limit else \
            "The request is too large."
    if isinstance(exc, ClientDisconnected):
        return BODY_MESSAGE
    if exc.code == 404:
        return f"There is nothing at {request.path}."
    if exc.code == 405:
        return f"{request.method} is not allowed on {request.path}."
    return exc.description or exc.name


def _stop_reading() -> None:
    """The client stalled (READ_TIMEOUT) or went away mid-body, or its body is refused
    unread (413, 503 `busy`): read nothing more from it.

    Otherwise gunicorn would spend this greenlet draining the rest of the body for
    keep-alive (16 refused 40 MB uploads at once took 53 s on one CPU); with the read side
    shut, the answer goes out and the connection closes at once.
    """
    sock = request.environ.get("gunicorn.socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass


def register_error_handlers(app) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        if exc.status == 413 or exc.code == "busy":  # a body refused, perhaps unread
            _stop_reading()
        headers = dict(exc.headers)
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="predict"'
        return error_response(exc.code, exc.message, headers)

    @app.errorhandler(ImageError)
    def image_error(exc: ImageError):
        return error_response(exc.code, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if isinstance(exc, ClientDisconnected) or exc.code == 413:
            _stop_reading()
        code = HTTP_CODES.get(exc.code) or exc.name.lower().replace(" ", "_").replace("'", "")
        headers = {"Allow": ", ".join(exc.valid_methods)} \
            if getattr(exc, "valid_methods", None) else None
        return error_response(code, _http_message(exc), headers, status=exc.code or 500)

    def body_error(exc: Exception):
        log.info("unreadable request body on %s %s: %r", request.method, request.path, exc)
        return error_response("bad_request", BODY_MESSAGE)

    for exc_class in BODY_ERRORS:
        app.register_error_handler(exc_class, body_error)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response("internal_error",
                              "Something went wrong on our side; it has been logged.")
