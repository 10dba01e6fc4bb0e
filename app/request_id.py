"""A request id on every request: the caller's X-Request-ID when sane, else a new one.

It is echoed in the response header, which gunicorn's access log prints
(`%({x-request-id}o)s` in gunicorn.conf.py), so one id ties a client's report
to the log line.
"""
from __future__ import annotations

import re
import uuid

from flask import g, request

HEADER = "X-Request-ID"
_SAFE = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def init_request_id(app) -> None:
    @app.before_request
    def assign():
        given = request.headers.get(HEADER, "")
        g.request_id = given if _SAFE.match(given) else uuid.uuid4().hex

    @app.after_request
    def echo(response):
        response.headers[HEADER] = g.get("request_id") or uuid.uuid4().hex
        return response
