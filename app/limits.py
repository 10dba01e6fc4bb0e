"""Per-client budgets: /predict (and the form's POST /), explanations, corrections.

A client is the server's API key when it presents it (every holder of the one key shares a
budget), else its address: the connection's, or the header CLIENT_IP_HEADER names when a
proxy in front sets it (fly's Fly-Client-IP). An IPv6 address counts by its /64, the block
one subscriber holds, so a client cannot take a fresh budget per address.

The counts are the `limits` library's sliding-window counters (the engine of flask-limiter)
in this worker's memory: each gunicorn worker keeps its own, so a client whose connections
reach N workers gets up to N times each budget. flask-limiter itself checks its limits
before the view runs, when the explanation budget's cost (images in the body) is not known
yet, and answers in its own format; this module charges where the cost is known and
answers with the one error format (429 `rate_limited`, `Retry-After`).
"""
from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import time

from flask import current_app, request
from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from app.config import app_settings
from app.errors import ApiError
from app.security import key_presented

EXTENSION = "client_limits"  # the app's ClientLimits in app.extensions
# Budget name -> (the Settings field with its rates, what it counts, for the message).
BUDGETS = {"predict": ("predict_rate", "requests to classify"),
           "explain": ("explain_rate", "explained images"),
           "feedback": ("feedback_rate", "corrections")}


class ClientLimits:
    """This worker's count of what each client has used of each budget."""

    def __init__(self, settings):
        self.rates = {name: parse_many(getattr(settings, field))
                      for name, (field, _) in BUDGETS.items()}
        self._counter: SlidingWindowCounterRateLimiter | None = None
        self._pid: int | None = None

    @property
    def counter(self) -> SlidingWindowCounterRateLimiter:
        # Made in the worker that counts: MemoryStorage starts a timer thread, and the
        # gunicorn master, which builds the app, must fork without threads.
        if self._pid != os.getpid():
            self._counter = SlidingWindowCounterRateLimiter(MemoryStorage())
            self._pid = os.getpid()
        return self._counter

    def charge(self, budget: str, client: str, cost: int = 1) -> None:
        """Count `cost` against `client`'s `budget`, or raise 429 with when to retry.
        Nothing is counted when any of the budget's rates refuses."""
        counter = self.counter
        for rate in self.rates[budget]:
            if not counter.test(rate, budget, client, cost=cost):
                reset = counter.get_window_stats(rate, budget, client).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                raise ApiError("rate_limited", f"Too many {BUDGETS[budget][1]} from this "
                               f"client: at most {rate}. Please retry in {wait} s.",
                               {"Retry-After": str(wait)})
        for rate in self.rates[budget]:
            counter.hit(rate, budget, client, cost=cost)


def install(app, settings) -> None:
    app.extensions[EXTENSION] = ClientLimits(settings)


def client_address(settings) -> str:
    """The client's address: the trusted proxy header when configured and well formed."""
    raw = request.headers.get(settings.client_ip_header, "").strip() \
        if settings.client_ip_header else ""
    for candidate in (raw, request.remote_addr or ""):
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return request.remote_addr or "unknown"


def client_id(settings=None) -> str:
    """Who is asking, as recorded beside a correction: "key:<id>" or "ip:<address>"."""
    settings = settings or app_settings()
    if settings.api_key and key_presented(settings.api_key):
        return "key:" + hashlib.sha256(settings.api_key.encode("utf-8")).hexdigest()[:12]
    return "ip:" + client_address(settings)


def _budget_holder(settings) -> str:
    client = client_id(settings)
    if client.startswith("ip:") and ":" in client[3:]:  # IPv6: the subscriber's /64
        client = "ip:" + str(ipaddress.ip_network(client[3:] + "/64", strict=False))
    return client


def charge(budget: str, cost: int = 1) -> None:
    """Count against this request's client; 429 `rate_limited` past the budget."""
    settings = app_settings()
    current_app.extensions[EXTENSION].charge(budget, _budget_holder(settings), cost)


def charge_explanations(count: int) -> None:
    """?explain=1 on `count` images: at most MAX_EXPLANATIONS, each one off the budget."""
    cap = app_settings().max_explanations
    if count > cap:
        raise ApiError("too_many_explanations", f"explain=1 takes at most {cap} images per "
                       f"request, not {count}: send them in smaller requests, or ask without "
                       "explain=1.")
    charge("explain", count)
