"""Getting the uploaded images out of a request: multipart `file` fields, a raw image body,
or JSON (app/json_uploads.py).

Bytes only here; decoding (and every check on the pixels) is classifier.images.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

from flask import Request, request

from app.errors import ApiError
from app.json_uploads import uploads_from_json
from app.upload_deadline import read_up_to

FIELD = "file"


class UploadRequest(Request):
    """A request whose multipart files are held in memory, not spooled to a temporary file.

    The bytes are read whole anyway (`Upload.data`); werkzeug spooled any file over 500 KB to
    disk first, and a phone photo's write and read back were 1.3 ms of its request.
    `getvalue()` hands over the buffer without a copy, so memory holds the file once, as the
    body budget (app/body_budget.py) counts it: 16 uploads at MAX_UPLOAD_MB peaked 55 MB over
    idle, against 109 MB with the spooled file's page cache (docs/reliability.md).
    """

    def _get_file_stream(self, *_args, **_kwargs):  # werkzeug passes the part's sizes and type
        return io.BytesIO()


def _file_bytes(file) -> bytes:
    stream = file.stream
    return stream.getvalue() if isinstance(stream, io.BytesIO) else file.read()


@dataclass
class Upload:
    filename: str
    data: bytes


def _missing(message: str = "Send an image: a multipart form field named 'file', "
                            "or the raw image as the body with Content-Type image/*."):
    return ApiError("missing_file", message)


def uploads_from_request(max_batch: int, allow_raw: bool = True, fetch_url=None,
                         form_fields: tuple[str, ...] | None = None) -> list[Upload]:
    """The request's images as bytes; raises ApiError for the request's shape.

    `allow_raw`: the API's other shapes too, an image/* body and JSON (app/json_uploads.py).
    `fetch_url(url) -> bytes` serves JSON's {"url": ...}; None when URL input is off.
    `form_fields`: the only fields a multipart form may carry (as JSON's are checked: a
    parameter sent as a field by mistake is refused, not ignored); None: any.
    """
    mimetype = request.mimetype or ""
    if mimetype == "multipart/form-data":
        files = [f for f in request.files.getlist(FIELD) if f.filename or f.content_length]
        if not files:
            # A field under another name is the most common client mistake: say so.
            # (a part with no name at all is filed under None)
            other = [name for name in request.files if name and name != FIELD]
            raise _missing(f"No file in the form field '{FIELD}'"
                           + (f" (got: {', '.join(sorted(other))})." if other else "."))
        unknown = [] if form_fields is None else \
            sorted({str(name) for name in (*request.form, *request.files)} - set(form_fields))
        if unknown:
            raise ApiError("invalid_field", f"Unknown form field {unknown[0][:40]!r}: send "
                           f"only {', '.join(form_fields)} (parameters go in the query).")
        if len(files) > max_batch:
            raise ApiError("payload_too_large",
                           f"{len(files)} files sent; at most {max_batch} per request.")
        return [Upload(f.filename or f"{FIELD}{i}", _file_bytes(f)) for i, f in enumerate(files)]
    if allow_raw and mimetype.startswith("image/"):
        return [Upload("body", read_body(request.max_content_length))]
    if allow_raw and mimetype == "application/json":
        return [Upload(name, data) for name, data in
                uploads_from_json(max_batch, request.max_content_length, fetch_url)]
    if not mimetype and not request.content_length:  # an empty POST
        raise _missing()
    if mimetype == "application/x-www-form-urlencoded":  # a form, but one that cannot hold files
        raise _missing("This form carries no file: send it as multipart/form-data "
                       "(enctype=\"multipart/form-data\") with the image in 'file'.")
    raise ApiError("unsupported_media_type",
                   f"Content-Type {mimetype or '(none)'} is not accepted: send "
                   "multipart/form-data with a 'file' field, an image/* body, or JSON.")


def read_body(limit: int | None) -> bytes:
    """The raw request body, refusing one of `limit` bytes or more.

    werkzeug refuses a Content-Length over the limit up front; a chunked body
    (no Content-Length) is cut at the limit instead, so it is counted here.
    """
    data = read_up_to(request.stream, None if limit is None else limit + 1)
    if limit is not None and len(data) >= limit:
        raise ApiError("payload_too_large",
                       f"The request is too large: at most {limit / 2**20:g} MB.")
    return data
