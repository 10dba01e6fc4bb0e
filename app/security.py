"""API key on the JSON prediction endpoint, and CORS for browsers on other origins."""
from __future__ import annotations

import hmac

from flask import request

from app.errors import ApiError

CORS_ALLOW_HEADERS = "Authorization, X-API-Key, Content-Type, X-Request-ID"


def presented_key() -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("X-API-Key")


def check_api_key(expected: str | None) -> None:
    """Raise 401 unless the request carries `expected` (no-op when no key is configured)."""
    if not expected:
        return
    given = presented_key()
    # compare_digest on bytes: constant time whatever the characters.
    if given is None or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                                expected.encode("utf-8")):
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
