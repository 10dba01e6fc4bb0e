"""Waiting with a bound: for a condition instead of sleeping a guessed time, and for threads,
where one that hangs must be seen as a failure, not as a result that never arrived."""
from __future__ import annotations

import threading
import time


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def run_in_threads(task, count: int, timeout: float) -> list:
    """task(i) for each i < count, each in its own thread; every result, in order, once all
    have returned. A task's exception is its result. Raises TimeoutError naming the tasks
    still running after `timeout` seconds (they are daemon threads, left to the process)."""
    results: dict[int, object] = {}

    def run(i: int) -> None:
        try:
            results[i] = task(i)
        except Exception as exc:  # noqa: BLE001 - the caller judges each outcome
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = [i for i, thread in enumerate(threads) if thread.is_alive()]
    if hung:
        raise TimeoutError(f"tasks {hung} of {count} still running after {timeout:g} s")
    return [results[i] for i in range(count)]
