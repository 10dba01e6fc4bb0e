"""Prometheus metrics: requests and latency by endpoint and status, predictions by label and
model version, the version each worker serves and the versions it refused.

Under gunicorn every worker writes its samples to PROMETHEUS_MULTIPROC_DIR
(set up by gunicorn.conf.py) and /metrics merges them, so any worker's answer
covers the whole server. Without that variable (tests, `flask run`) the
process's own registry is served.
"""
from __future__ import annotations

import os
import time

from flask import Blueprint, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("classifier_http_requests_total", "HTTP requests answered.",
                   ["endpoint", "method", "status"])
LATENCY = Histogram("classifier_http_request_duration_seconds",
                    "Time from request start to response, seconds.", ["endpoint", "status"],
                    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10))
PREDICTIONS = Counter("classifier_predictions_total",
                      "Images classified, by top-1 label and the model version that answered.",
                      ["label", "version"])
# Per worker process ("liveall": a dead worker's samples go): 1 for the version it serves.
SERVED_VERSION = Gauge("classifier_model_version_info", "1 for the model version a worker "
                       "serves, 0 for one it served before.", ["version"],
                       multiprocess_mode="liveall")
REFUSED_VERSIONS = Counter("classifier_model_versions_refused_total", "Versions the pointer "
                           "named that a worker refused to serve (failed to load or to check; "
                           "the reason is in the log and /model's refused).", ["version"])

bp = Blueprint("metrics", __name__)
# The methods a label may name; any other (gunicorn accepts any 3-20 letter token) is
# "other", so clients cannot grow the series without bound.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


def endpoint_label() -> str:
    # The route pattern, never the raw path: unknown URLs must not explode the label set.
    return request.url_rule.rule if request.url_rule is not None else "unmatched"


def method_label() -> str:
    return request.method if request.method in METHODS else "other"


def record_predictions(predictions, version: str) -> None:
    for prediction in predictions:
        PREDICTIONS.labels(label=prediction.label, version=version).inc()


def record_served_version(version: str, previous: str | None) -> None:
    if previous is not None and previous != version:
        SERVED_VERSION.labels(version=previous).set(0)
    SERVED_VERSION.labels(version=version).set(1)


def record_refusal(version: str | None) -> None:
    REFUSED_VERSIONS.labels(version=version or "unknown").inc()


def init_metrics(app) -> None:
    @app.before_request
    def start_timer():
        g.started = time.perf_counter()

    @app.after_request
    def observe(response):
        started = g.get("started")
        endpoint, status = endpoint_label(), str(response.status_code)
        REQUESTS.labels(endpoint=endpoint, method=method_label(), status=status).inc()
        if started is not None:
            LATENCY.labels(endpoint=endpoint, status=status).observe(
                time.perf_counter() - started)
        return response

    app.register_blueprint(bp)


def server_registry():
    """The whole server's samples: every worker's merged under gunicorn, else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


@bp.get("/metrics")
def metrics():
    return Response(generate_latest(server_registry()), content_type=CONTENT_TYPE_LATEST)
