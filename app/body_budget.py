"""A memory budget for request bodies: each worker holds at most BODY_BUDGET_MB of them.

A body is held from its first byte read until its request ends: while it arrives, while it
waits for the one decode slot (app/model_service.py) and while it is decoded. Without a
bound, 16 uploads of 40 MB at once (or 4 JSON bodies of 40 MB of base64, each parsed into
copies) OOM-killed a 512 MB machine's worker, and every request in flight with it.

The body is accounted before it is read: its whole Content-Length at the first read, or, for
a chunked body, each part as it is read. A request that would take the worker past the
budget gets 503 `busy` with Retry-After and its body is never read (the connection closes);
one that could never fit, even alone, gets 413. A JSON body counts 2.1 times: parsing it
holds the document and the base64 text at once (app/json_uploads.py).
"""
from __future__ import annotations

import threading

from app.errors import ApiError

# Parsing one 40 MB image as JSON peaked at 2.05 times its body (benchmarks/json_body_memory.py)
JSON_WEIGHT = 2.1
RETRY_AFTER_S = 2  # a large upload is decoded in about a second: the held ones are gone by then


class BodyBudget:
    """Bytes of request bodies this worker holds, against `capacity`."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.held = 0
        self._lock = threading.Lock()

    def reserve(self, size: int, whole: int) -> None:
        """Hold `size` more bytes of a body that needs `whole` in all; raises ApiError:
        503 `busy`, or 413 when the whole body could never fit, even alone."""
        if whole > self.capacity:
            raise ApiError("payload_too_large",
                           f"This server holds at most {self.capacity / 2**20:.1f} MB of "
                           f"request bodies at a time; this one needs more "
                           f"({whole / 2**20:.1f} MB). Send a smaller image, or multipart "
                           "rather than JSON, which counts 2.1 times.")
        with self._lock:
            if self.held + size > self.capacity:
                busy = True
            else:
                self.held, busy = self.held + size, False
        if busy:
            raise ApiError("busy", "The server is receiving and decoding as many uploads as "
                                   "its memory allows; please retry shortly.",
                           {"Retry-After": str(RETRY_AFTER_S)})

    def release(self, size: int) -> None:
        with self._lock:
            self.held -= size


class BudgetedInput:
    """wsgi.input that reserves a request's body in the budget before reading it: all of its
    Content-Length at the first read, or (chunked) each part as it is read."""

    def __init__(self, inner, budget: BodyBudget, content_length: int | None, weight: float):
        self.inner, self.budget, self.weight = inner, budget, weight
        self.unreserved_length = content_length
        self.per_part = content_length is None  # chunked: reserved as it is read
        self.reserved = 0

    def _reserve(self, size: int) -> None:
        size = int(size * self.weight)
        self.budget.reserve(size, self.reserved + size)
        self.reserved += size

    def _bounded(self, read) -> bytes:
        if self.unreserved_length is not None:
            size, self.unreserved_length = self.unreserved_length, None
            self._reserve(size)
            return read()
        data = read()
        if self.per_part:
            self._reserve(len(data))
        return data

    def read(self, size: int | None = -1) -> bytes:
        return self._bounded(lambda: self.inner.read(size))

    def readline(self, size: int | None = -1) -> bytes:
        return self._bounded(lambda: self.inner.readline(size))

    def __iter__(self):
        while line := self.readline():
            yield line


def _content_length(environ) -> int | None:
    try:
        return max(0, int(environ.get("CONTENT_LENGTH") or ""))
    except ValueError:
        return None


def with_body_budget(wsgi_app, budget: BodyBudget):
    """Account every request's body in `budget` (see the module doc); release it at the end."""
    def app(environ, start_response):
        if "wsgi.input" not in environ:
            return wsgi_app(environ, start_response)
        json_body = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower() \
            == "application/json"
        body = BudgetedInput(environ["wsgi.input"], budget, _content_length(environ),
                             JSON_WEIGHT if json_body else 1)
        environ["wsgi.input"] = body
        try:
            return wsgi_app(environ, start_response)
        finally:
            budget.release(body.reserved)
    return app
