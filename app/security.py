"""API key on the JSON prediction endpoint, CORS for browsers on other origins, and the
same-site check on the correction form's posts."""
from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from flask import request

from app.errors import ApiError

CORS_ALLOW_HEADERS = "Authorization, X-API-Key, Content-Type, X-Request-ID"


def presented_key() -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("X-API-Key")


def key_presented(expected: str) -> bool:
    """Whether the request carries `expected`, compared in constant time."""
    given = presented_key()
    # compare_digest on bytes: constant time whatever the characters.
    return given is not None and hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def check_api_key(expected: str | None) -> None:
    """Raise 401 unless the request carries `expected` (no-op when no key is configured)."""
    if expected and not key_presented(expected):
        raise ApiError("unauthorized",
                       "A valid API key is required: send 'Authorization: Bearer <key>' "
                       "or 'X-API-Key: <key>'.")


def add_cors_headers(response, allowed: tuple[str, ...]):
    """Allow the request's Origin when CORS_ORIGINS lists it (or is '*'); answer preflights."""
    origin = request.headers.get("Origin")
    if not allowed or not origin:
        return response
    response.vary.add("Origin")
    if "*" in allowed:
        response.headers["Access-Control-Allow-Origin"] = "*"
    elif origin.rstrip("/") in allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
    else:
        return response
    response.headers["Access-Control-Expose-Headers"] = "X-Request-ID"
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = "POST, GET, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
    return response


# Sec-Fetch-Site values of a browser's request that no other site started.
SAME_SITE_FETCHES = ("same-origin", "none")


def check_same_site() -> None:
    """Refuse a browser's post that another site started (403 `cross_site_request`).

    Any web page can post a form here, and the browser sends it: a page elsewhere could
    file corrections in its visitors' names. Browsers say who started a request in
    Sec-Fetch-Site (or, older ones, Origin) and pages cannot forge either; curl and other
    API clients send neither and are let through, as they are no one's visitors.
    """
    fetch_site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if fetch_site is not None:
        same = fetch_site.strip().lower() in SAME_SITE_FETCHES
    else:  # "null" (a sandboxed frame, a privacy redirect) has no host and is refused
        same = origin is None or urlsplit(origin.strip()).netloc.lower() == request.host.lower()
    if not same:
        raise ApiError("cross_site_request", "This form can only be sent from this site's "
                       "own page; API clients send no Origin or Sec-Fetch-Site header.")
