"""Bounds on how slowly a client may send its request body (READ_TIMEOUT, MIN_UPLOAD_KBPS).

Two bounds, both needed:
- a pause: no single socket read may wait longer than READ_TIMEOUT seconds;
- a rate: after READ_TIMEOUT seconds of grace, the client must keep up an average of
  MIN_UPLOAD_KBPS. A trickle of one byte every few seconds never pauses long enough for the
  first bound, but fails this one after the grace period. The default (20 KB/s) lets a
  10 MB photo over a slow mobile link (100 KB/s) through with a five-fold margin.

A client that breaks either gets a 400 (the read raises TimeoutError, which werkzeug turns
into ClientDisconnected; app/errors.py answers it and stops reading). The rate bound needs
gevent's Timeout (the served worker, app/worker.py); elsewhere only the pause bound applies.
"""
from __future__ import annotations

import io
import time

from app.event_loop import gevent_active

# The rate is checked at least once per CHUNK bytes. Each check is a gevent timer and a
# socket read: 64 KB rather than 16 KB took a 12 MP upload's p50 from 78.5 to 68.7 ms
# (medians of 3 alternating runs, 2 quiet cores), and delays catching a trickle by 2.4 s.
CHUNK = 64 * 1024


class MinimumRateInput:
    """wsgi.input that fails a read once the client falls behind `rate` bytes/s after `grace` s."""

    def __init__(self, inner, rate: float, grace: float, timeout_class):
        self.inner, self.rate, self.grace = inner, rate, grace
        self.timeout_class = timeout_class
        self.start = time.monotonic()
        self.received = 0

    def _bounded(self, read, want: int) -> bytes:
        due = self.start + self.grace + (self.received + want) / self.rate
        timer = self.timeout_class(max(0.0, due - time.monotonic()))
        timer.start()
        try:
            data = read()
        except self.timeout_class as exc:
            if exc is not timer:
                raise
            raise TimeoutError(f"upload slower than {self.rate / 1024:g} KB/s") from None
        finally:
            timer.close()
        self.received += len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (all when negative), short only at the end, like gunicorn's body:
        read in CHUNKs, each under the deadline for the bytes received so far."""
        parts, left = [], (-1 if size is None else size)
        while left != 0:
            want = CHUNK if left < 0 else min(left, CHUNK)
            part = self._bounded(lambda n=want: self.inner.read(n), want)
            if not part:
                break
            parts.append(part)
            left = left if left < 0 else left - len(part)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        want = CHUNK if size is None or size < 0 else min(size, CHUNK)
        return self._bounded(lambda: self.inner.readline(want), want)

    def __iter__(self):
        while line := self.readline():
            yield line


def read_up_to(stream, cap: int | None) -> bytes:
    """A request body, to its end or `cap` bytes: one read of a WSGI input may return only
    what has arrived so far, so read until the stream says it is done. (A BytesIO grows in
    place and hands its buffer over as the bytes: one copy of the body in memory, not two.)"""
    data = io.BytesIO()
    while cap is None or data.tell() < cap:
        chunk = stream.read(CHUNK if cap is None else min(CHUNK, cap - data.tell()))
        if not chunk:
            break
        data.write(chunk)
    return data.getvalue()


def with_upload_deadline(wsgi_app, read_timeout: float, min_rate: float):
    """Apply both bounds to every request gunicorn serves (see the module doc)."""
    def app(environ, start_response):
        sock = environ.get("gunicorn.socket")
        if sock is not None:
            # gunicorn reads the body in blocking socket calls; a timeout bounds each pause.
            sock.settimeout(read_timeout)
            if gevent_active() and "wsgi.input" in environ:
                from gevent import Timeout

                environ["wsgi.input"] = MinimumRateInput(environ["wsgi.input"], min_rate,
                                                         read_timeout, Timeout)
        return wsgi_app(environ, start_response)
    return app
