"""Images sent as JSON: {"image": "<base64>"}, {"images": [...]} or {"url": "https://..."}.

The convention of TensorFlow Serving's `b64` and most hosted vision APIs. Each image
is standard or URL-safe base64, or a `data:` URL holding base64. The limits are those
of a multipart upload: MAX_UPLOAD_MB applies to the decoded bytes of all images
together (the body may be a third larger, as base64 is), MAX_BATCH to their number.
"""
from __future__ import annotations

import base64
import binascii
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
        # bytes: json detects UTF-8/16/32 itself and refuses anything else
        return json.loads(data)
    except UnicodeDecodeError:
        raise ApiError("invalid_json", "The body is not UTF-8 text.") from None
    except ValueError as exc:
        raise ApiError("invalid_json", f"The body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise ApiError("invalid_json", "The JSON is nested too deeply.") from None


def decode_base64(text, where: str) -> bytes:
    """A base64 string (standard, URL-safe, with line breaks, or a data: URL) -> bytes."""
    if not isinstance(text, str):
        raise _invalid(f"{where} must be a base64 string, not {_json_type(text)}.")
    if text[:5].lower() == "data:":
        prefix = _DATA_URL.match(text[:512])
        if not prefix:
            raise ApiError("invalid_base64", f"{where} is a data: URL without base64 "
                           "(expected data:image/...;base64,...).")
        text = text[prefix.end():]
    text = _WHITESPACE.sub("", text).replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("invalid_base64", f"{where} is not valid base64.") from None


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
    if "image" in body:
        uploads = [("image", decode_base64(body["image"], "image"))]
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
        uploads = [(f"images[{i}]", decode_base64(item, f"images[{i}]"))
                   for i, item in enumerate(images)]
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
