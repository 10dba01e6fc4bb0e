"""Who may use /review: holders of the API key. Scripts send the key as on /predict; a
browser signs in once with it (a POST form) and then carries a cookie.

The cookie holds no key: an expiry and an HMAC of it keyed by the API key, so any worker
checks it without shared state, and changing API_KEY signs everyone out. It is HttpOnly
(no script reads it), SameSite=Strict (no other site's page makes the browser send it),
Secure over HTTPS and scoped to /review. The key never goes in a URL, where history, logs
and Referer headers would keep it. Every post also passes app/security.py's same-site
check, and sign-in attempts cost the client's FEEDBACK_RATE budget (guessing is slow).
"""
from __future__ import annotations

import hashlib
import hmac
import time

from flask import request

from app.security import key_presented

COOKIE = "review_session"
SESSION_SECONDS = 12 * 3600  # a working day of labelling, then sign in again
PATH = "/review"


def _session_value(key: str, expires: int) -> str:
    mac = hmac.new(key.encode("utf-8"), f"review:{expires}".encode(), hashlib.sha256)
    return f"{expires}.{mac.hexdigest()}"


def _has_session(key: str) -> bool:
    raw = request.cookies.get(COOKIE, "")
    expires, _, _ = raw.partition(".")
    if not expires.isdigit() or int(expires) < time.time():
        return False
    return hmac.compare_digest(raw.encode("utf-8", "surrogateescape"),
                               _session_value(key, int(expires)).encode())


def allowed(key: str) -> bool:
    """Whether this request comes from a holder of `key` (a header or a session cookie)."""
    return key_presented(key) or _has_session(key)


def key_matches(given: str, key: str) -> bool:
    """The sign-in form's key against `key`, in constant time."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), key.encode("utf-8"))


def start_session(response, key: str):
    expires = int(time.time()) + SESSION_SECONDS
    response.set_cookie(COOKIE, _session_value(key, expires), max_age=SESSION_SECONDS,
                        path=PATH, httponly=True, samesite="Strict", secure=_https())
    return response


def end_session(response):
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="Strict",
                           secure=_https())
    return response


def _https() -> bool:
    # Behind fly's proxy the app sees http; the proxy says what the browser used.
    return request.is_secure or request.headers.get("X-Forwarded-Proto", "") == "https"
