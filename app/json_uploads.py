"""Images sent as JSON: {"image": "<base64>"}, {"images": [...]} or {"url": "https://..."}.

The convention of TensorFlow Serving's `b64` and most hosted vision APIs. Each image
is standard or URL-safe base64, or a `data:` URL holding base64. The limits are those
of a multipart upload: MAX_UPLOAD_MB applies to the decoded bytes of all images
together (the body may be a third larger, as base64 is), MAX_BATCH to their number.

Memory: the body is held once as bytes, then as the text json parses, then as the base64
strings it yields, each dropped before the next is made but the last two (a document and
its strings); the base64 is decoded a piece at a time into the image's bytes. One 40 MB
image as JSON peaks at about twice its body (benchmarks/json_body_memory.py; before, three
times), which app/body_budget.py's JSON_WEIGHT charges.
"""
from __future__ import annotations

import binascii
import io
import json
import math
import re

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from app.errors import ApiError
from app.upload_deadline import read_up_to

FIELDS = ("image", "images", "url")
# Room for the JSON around the base64 text (keys, quotes, a data: URL's prefix).
BODY_SLACK = 64 * 1024
_DATA_URL = re.compile(r"^data:[^,;]*(;[^,;=]+=[^,;]*)*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"[ \t\r\n]+")
# Characters of base64 decoded at a time: the only copy of the text made while decoding it.
BASE64_PIECE = 4 * 2**20


def json_body_limit(max_bytes: int) -> int:
    """The largest JSON body that can carry `max_bytes` of images in base64."""
    return 4 * math.ceil(max_bytes / 3) + BODY_SLACK


def _invalid(message: str) -> ApiError:
    return ApiError("invalid_field", message)


def read_json_body(max_bytes: int):
    """The parsed body; ApiError 413 when too large, 400 invalid_json when not JSON."""
    limit = json_body_limit(max_bytes)
    too_large = ApiError("payload_too_large",
                         f"The JSON body is too large: at most {max_bytes / 2**20:.3g} MB of "
                         f"images in all (about {limit / 2**20:.1f} MB of JSON in base64).")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    request.max_content_length = limit
    try:
        data = read_up_to(request.stream, limit + 1)
    except RequestEntityTooLarge:  # a chunked body has no Content-Length to check up front
        raise too_large from None
    if len(data) >= limit:  # werkzeug stops a chunked body at the limit, raising nothing
        raise too_large
    try:
        # UTF-8/16/32, detected as json.loads does for bytes; the bytes go before parsing
        text = data.decode(json.detect_encoding(data), "surrogatepass")
    except UnicodeDecodeError:
        raise ApiError("invalid_json", "The body is not UTF-8 text.") from None
    del data
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ApiError("invalid_json", f"The body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise ApiError("invalid_json", "The JSON is nested too deeply.") from None


def decode_base64(text, where: str) -> bytes:
    """A base64 string (standard, URL-safe, with line breaks, or a data: URL) -> bytes,
    decoded BASE64_PIECE characters at a time into one buffer (no copy of the whole text)."""
    if not isinstance(text, str):
        raise _invalid(f"{where} must be a base64 string, not {_json_type(text)}.")
    start = 0
    if text[:5].lower() == "data:":
        prefix = _DATA_URL.match(text[:512])
        if not prefix:
            raise ApiError("invalid_base64", f"{where} is a data: URL without base64 "
                           "(expected data:image/...;base64,...).")
        start = prefix.end()
    out, carry, padded = io.BytesIO(), "", False
    for offset in range(start, len(text) + 1, BASE64_PIECE):
        last = offset + BASE64_PIECE >= len(text)
        piece = carry + _WHITESPACE.sub("", text[offset:offset + BASE64_PIECE])
        piece = piece.replace("-", "+").replace("_", "/")
        whole = len(piece) if last else len(piece) - len(piece) % 4
        piece, carry = piece[:whole], piece[whole:]
        if last:
            piece += "=" * (-len(piece) % 4)
        if padded and piece:  # "=" ends the data; a strict decode sees one piece at a time
            raise _not_base64(where)
        padded = "=" in piece
        try:
            out.write(binascii.a2b_base64(piece, strict_mode=True))
        except (binascii.Error, ValueError):
            raise _not_base64(where) from None
    return out.getvalue()


def _not_base64(where: str) -> ApiError:
    return ApiError("invalid_base64", f"{where} is not valid base64.")


def _json_type(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}.get(type(value), "a value")


def uploads_from_json(max_batch: int, max_bytes: int, fetch_url=None) -> list[tuple[str, bytes]]:
    """The images of a JSON request as (name, bytes); raises ApiError for its shape.

    `fetch_url(url)` -> bytes serves {"url": ...}; None when URL input is off.
    """
    body = read_json_body(max_bytes)
    if not isinstance(body, dict):
        raise _invalid(f"The body must be a JSON object such as {{\"image\": \"<base64>\"}}, "
                       f"not {_json_type(body)}.")
    unknown = sorted(str(k) for k in body if k not in FIELDS)
    if unknown:
        raise _invalid(f"Unknown field {unknown[0][:40]!r}: send one of "
                       f"{', '.join(FIELDS)}.")
    given = [k for k in FIELDS if k in body]
    if not given:
        raise ApiError("missing_file", "Send an image: {\"image\": \"<base64>\"}, "
                                            "{\"images\": [...]} or {\"url\": \"https://...\"}.")
    if len(given) > 1:
        raise _invalid(f"Send only one of {', '.join(given)}.")
    if "url" in body:
        return [_url_upload(body["url"], fetch_url)]
    # Each string is taken out of the body as it is decoded, so it is dropped with it.
    if "image" in body:
        uploads = [("image", decode_base64(body.pop("image"), "image"))]
    else:
        images = body["images"]
        if not isinstance(images, list):
            raise _invalid(f"images must be an array of base64 strings, not "
                           f"{_json_type(images)}.")
        if not images:
            raise ApiError("missing_file", "images is empty: send at least one.")
        if len(images) > max_batch:
            raise ApiError("payload_too_large",
                           f"{len(images)} images sent; at most {max_batch} per request.")
        uploads = []
        for i in range(len(images)):
            item, images[i] = images[i], None
            uploads.append((f"images[{i}]", decode_base64(item, f"images[{i}]")))
    if sum(len(data) for _, data in uploads) > max_bytes:
        raise ApiError("payload_too_large",
                       f"The images are too large: at most {max_bytes / 2**20:.3g} MB in all.")
    return uploads


def _url_upload(url, fetch_url) -> tuple[str, bytes]:
    if fetch_url is None:
        raise ApiError("url_fetch_disabled",
                       "This server does not fetch images from URLs (ALLOW_URL_FETCH is off): "
                       "send the image itself, as base64 in \"image\".")
    if not isinstance(url, str):
        raise _invalid(f"url must be a string, not {_json_type(url)}.")
    return url[:200], fetch_url(url)
