"""The minimum upload rate (app/upload_deadline.py), on gevent's Timeout, without a server."""
from __future__ import annotations

import io

import gevent
import pytest

from app.upload_deadline import CHUNK, MinimumRateInput


class Trickle:
    """A body that arrives at `rate` bytes/s (gevent sleeps, as a patched socket would)."""

    def __init__(self, size: int, rate: float):
        self.data, self.rate = io.BytesIO(bytes(size)), rate

    def read(self, n: int) -> bytes:
        part = self.data.read(n)
        gevent.sleep(len(part) / self.rate)
        return part


def test_a_body_faster_than_the_minimum_rate_is_read_whole():
    body = MinimumRateInput(Trickle(5 * CHUNK, rate=400 * 1024), rate=100 * 1024, grace=0.05,
                            timeout_class=gevent.Timeout)
    assert len(body.read()) == 5 * CHUNK
    body = MinimumRateInput(Trickle(3 * CHUNK, rate=400 * 1024), rate=100 * 1024, grace=0.05,
                            timeout_class=gevent.Timeout)
    assert len(body.read(2 * CHUNK + 5)) == 2 * CHUNK + 5  # whole, like gunicorn's body


def test_a_trickle_fails_once_the_grace_period_is_spent():
    body = MinimumRateInput(Trickle(10 * CHUNK, rate=4 * 1024), rate=100 * 1024, grace=0.2,
                            timeout_class=gevent.Timeout)
    start = gevent.get_hub().loop.now()
    with pytest.raises(TimeoutError, match="slower than 100 KB/s"):
        body.read()
    # The deadline: grace plus one CHUNK at the minimum rate, not the trickle's full 40 s.
    assert gevent.get_hub().loop.now() - start < 0.2 + CHUNK / (100 * 1024) + 1.0
