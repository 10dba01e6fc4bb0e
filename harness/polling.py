"""Waiting for a condition with a bound, instead of sleeping a guessed time."""
from __future__ import annotations

import time


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
