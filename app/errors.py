"""One error contract: {"error": {"code", "message"}} for the API, a friendly page for the form.

Every failure a client can cause maps to a 4xx here, including werkzeug's own
(body too large, too many form parts, malformed requests); anything else is a
bug, logged with its traceback and answered with a generic 500 that leaks nothing.
"""
from __future__ import annotations

import logging
import socket

from flask import jsonify, request
from werkzeug.exceptions import ClientDisconnected, HTTPException

from app.model_service import ModelUnavailable
from classifier.images import ImageError

log = logging.getLogger(__name__)

try:  # what gunicorn raises from wsgi.input on a malformed or cut-off body
    from gunicorn.http.errors import NoMoreData, ParseException
    BODY_ERRORS: tuple[type[Exception], ...] = (ParseException, NoMoreData)
except ImportError:  # not under gunicorn (flask run)
    BODY_ERRORS = ()
# (werkzeug turns an OSError from its limited stream, a read timeout included, into
# ClientDisconnected, a 400 that gets the same message.)
BODY_MESSAGE = ("The upload could not be read: it was malformed, cut off or too slow. "
                "Please try again.")

# Codes for werkzeug's HTTP errors; the rest become their lower_snake name.
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
              405: "method_not_allowed", 413: "payload_too_large",
              415: "unsupported_media_type", 503: "model_unavailable"}
IMAGE_STATUS = {"invalid_image": 400, "image_too_large": 413}
# Codes of the JSON and URL inputs (app/json_uploads.py, app/url_fetch.py) and of
# POST /feedback (app/feedback.py), with their status and what they mean.
INPUT_CODES = {
    "invalid_json": (400, "the body is not JSON: malformed, not UTF-8, or nested too deeply"),
    "invalid_field": (400, "a JSON field is missing, unknown or of the wrong type"),
    "invalid_base64": (400, "an image is not valid base64 (or a data: URL without base64)"),
    "url_fetch_disabled": (400, "{\"url\": ...} sent but ALLOW_URL_FETCH is off"),
    "url_not_allowed": (400, "the URL is not http(s), has credentials, or cannot be parsed"),
    "url_blocked_address": (400, "the URL's host resolves to a non-public address"),
    "url_too_many_redirects": (400, "the URL redirected more than 3 times"),
    "url_fetch_failed": (400, "the URL could not be fetched: DNS, connection, timeout or "
                              "an HTTP error status"),
    "url_too_large": (400, "the image at the URL is over MAX_UPLOAD_MB"),
    "url_not_image": (400, "the URL answered with something that is not an image"),
    "feedback_disabled": (404, "POST /feedback with no FEEDBACK_DIR set"),
    "invalid_label": (400, "the corrected label is not one of the model's classes"),
    "feedback_unavailable": (503, "FEEDBACK_DIR is not writable (the error is logged)"),
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def wants_html() -> bool:
    """The form's pages (and browsers lost on unknown URLs) get HTML; everything else JSON."""
    if request.blueprint == "web" or (request.blueprint == "feedback"
                                      and request.args.get("from_page")):
        return True
    if request.url_rule is None:
        best = request.accept_mimetypes.best_match(["application/json", "text/html"])
        return best == "text/html" and request.accept_mimetypes[best] > \
            request.accept_mimetypes["application/json"]
    return False


def error_response(status: int, code: str, message: str, headers=None):
    if wants_html():
        from app.web import render_page  # the form module renders its own page
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
    """The client stalled (READ_TIMEOUT) or went away mid-body: read nothing more from it.

    Otherwise gunicorn would spend up to 5 s more of this thread draining the rest of
    the body for keep-alive; with the read side shut, the answer goes out and the
    connection closes at once.
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
        headers = {"WWW-Authenticate": 'Bearer realm="predict"'} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.errorhandler(ImageError)
    def image_error(exc: ImageError):
        return error_response(IMAGE_STATUS.get(exc.code, 400), exc.code, str(exc))

    @app.errorhandler(ModelUnavailable)
    def unavailable(exc: ModelUnavailable):
        return error_response(503, "model_unavailable", str(exc), {"Retry-After": "5"})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if isinstance(exc, ClientDisconnected):
            _stop_reading()
        code = HTTP_CODES.get(exc.code) or exc.name.lower().replace(" ", "_").replace("'", "")
        headers = {"Allow": ", ".join(exc.valid_methods)} \
            if getattr(exc, "valid_methods", None) else None
        return error_response(exc.code or 500, code, _http_message(exc), headers)

    def body_error(exc: Exception):
        log.info("unreadable request body on %s %s: %r", request.method, request.path, exc)
        return error_response(400, "bad_request", BODY_MESSAGE)

    for exc_class in BODY_ERRORS:
        app.register_error_handler(exc_class, body_error)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error",
                              "Something went wrong on our side; it has been logged.")
