"""The real server: `gunicorn -c gunicorn.conf.py "app:create_app()"` on a free port, over HTTP."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from app.config import load_settings
from harness.images import TEXT, encode, photo
from harness.judge import check_prediction
from harness.raw_http import read_response, upload
from harness.servers import GunicornServer
from harness.shipped_config import fly_env, gunicorn_settings
from harness.waiting import wait_until

pytestmark = pytest.mark.e2e

STALE_COUNT = 1000  # /healthz answers a previous run left in the metrics folder


def leave_stale_metrics(folder) -> None:
    """What a killed earlier server leaves in PROMETHEUS_MULTIPROC_DIR: a counter file."""
    code = ("from prometheus_client import Counter\n"
            "Counter('classifier_http_requests_total', '', ['endpoint', 'method', 'status'])"
            f".labels('/healthz', 'GET', '200').inc({STALE_COUNT})")
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)})


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    metrics_dir = tmp_path_factory.mktemp("metrics")
    leave_stale_metrics(metrics_dir)
    with GunicornServer(model_dir / "export.pkl",
                        env={"WEB_CONCURRENCY": "2", "THREADS": "4", "MAX_UPLOAD_MB": "1",
                             "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}) as srv:
        yield srv


def total(metrics_text: str, name: str, **labels) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
               if line.startswith(name + "{")
               and all(f'{k}="{v}"' in line for k, v in labels.items()))


def test_serves_over_http_with_preloaded_workers(server):
    assert len(server.worker_pids()) == 2
    assert requests.get(server.url + "/readyz", timeout=10).json()["status"] == "ready"
    image = encode(photo())
    r = requests.post(server.url + "/predict", files={"file": ("a.png", image, "image/png")},
                      headers={"X-Request-ID": "test-rid-42"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["X-Request-ID"] == "test-rid-42"
    assert abs(sum(r.json()["probabilities"].values()) - 1) < 1e-5
    batch = requests.post(server.url + "/predict", files=[("file", ("a.png", image)),
                                                          ("file", ("b.png", image))], timeout=30)
    assert [p["filename"] for p in batch.json()["predictions"]] == ["a.png", "b.png"]
    page = requests.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and 'accept="image/*,' in page.text
    assert re.search(r'"POST /predict HTTP/1.1" 200 .* rid=test-rid-42', server.log_text())


def test_errors_over_http_are_json_4xx(server):
    r = requests.post(server.url + "/predict", data=TEXT, headers={"Content-Type": "image/png"},
                      timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_image"
    r = requests.post(server.url + "/predict", data=bytes(2 * 2**20),
                      headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    r = requests.post(server.url + "/predict",
                      data=iter([bytes(256 * 1024)] * 8),  # chunked, no Content-Length
                      headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert server.alive() and len(server.worker_pids()) == 2


def test_a_body_refused_unread_is_not_drained(server):
    """A 413 on the Content-Length closes the connection: gunicorn would otherwise read the
    rest of the body (16 refused 40 MB uploads took 53 s on one CPU)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: 52428800\r\n\r\n" + bytes(64 * 1024))
        assert read_response(sock, timeout=10).status == 413
        sock.settimeout(5)  # READ_TIMEOUT is 10 s: a drain would still be waiting
        try:
            assert sock.recv(1) == b""
        except ConnectionResetError:
            pass


def test_stale_metrics_are_cleared_at_start_up(server):
    assert total(requests.get(server.url + "/metrics", timeout=10).text,
                 "classifier_http_requests_total", endpoint="/healthz") < STALE_COUNT
    assert set(server.requests_by_worker("/healthz")) <= set(server.worker_pids())


def test_both_workers_serve_and_metrics_merge_them(server):
    before = total(requests.get(server.url + "/metrics", timeout=10).text,
                   "classifier_http_requests_total", endpoint="/healthz", status="200")

    def hit():
        r = requests.get(server.url + "/healthz", timeout=10, headers={"Connection": "close"})
        assert r.status_code == 200

    sent = server.until_every_worker_answered(hit, "/healthz")
    text = requests.get(server.url + "/metrics", timeout=10).text
    assert total(text, "classifier_http_requests_total", endpoint="/healthz",
                 status="200") == before + sent


def test_forked_workers_explain_and_flag_unsure(server):
    """Grad-CAM runs a backward pass in workers forked from the preloading master."""
    image = encode(photo())
    for _ in range(4):  # both workers, most likely
        r = requests.post(server.url + "/predict?explain=1&top_k=2&threshold=1",
                          files={"file": ("a.png", image)}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["explanation"]["method"] == "grad-cam" and body["unsure"] is True
        assert len(body["top"]) == 2


def test_sigterm_drains_a_request_in_flight_and_exits_zero(server):
    """Last in this module: it stops the module's server. An upload under the size limit is
    half-sent, SIGTERM lands while a worker waits for the rest, the rest follows: the answer
    must still be a 200 prediction, and the master must then exit 0."""
    read_timeout = load_settings(server.env).read_timeout
    graceful = float(gunicorn_settings(server.env)["graceful_timeout"])
    raw = upload("/predict", encode(photo((400, 300), seed=1)), "a.png", "image/png")
    assert len(raw) < load_settings(server.env).max_content_length / 2
    client = socket.create_connection(("127.0.0.1", server.port),
                                      timeout=graceful + read_timeout)
    try:
        client.sendall(raw[:len(raw) // 2])
        half_sent = time.monotonic()
        assert wait_until(lambda: server.serves_connection_from(client), read_timeout / 4)
        server.proc.send_signal(signal.SIGTERM)
        assert wait_until(lambda: "Handling signal: term" in server.log_text(), read_timeout / 4)
        # The pause stays under READ_TIMEOUT, or the server would rightly give up on us.
        assert time.monotonic() - half_sent < read_timeout / 2
        client.sendall(raw[len(raw) // 2:])
        out = read_response(client, timeout=graceful + read_timeout)
    finally:
        client.close()
    assert out.status == 200, (out.status, out.error, out.body[:300], server.log_tail())
    assert check_prediction(json.loads(out.body)) == []
    code = server.wait_exit(graceful + 15)
    assert code == 0, server.log_tail()
    assert not server.alive() and not server.worker_pids()


def test_the_settings_fly_toml_ships_are_served(model_dir):
    """fly.toml's [env] exactly (read from the file): ready, with its runtime and counts."""
    env = fly_env()
    defaults = load_settings({})  # for a setting fly.toml leaves out
    runtime = env.get("INFERENCE_RUNTIME", defaults.runtime).lower()
    workers = int(env.get("WEB_CONCURRENCY", defaults.workers))
    threads = int(env.get("THREADS", defaults.threads))
    with GunicornServer(model_dir / "export.pkl", env=env) as srv:
        assert requests.get(srv.url + "/readyz", timeout=10).status_code == 200
        info = requests.get(srv.url + "/model", timeout=10).json()
        assert info["runtime"] == ("onnx" if runtime == "auto" else runtime)  # resnet18 converts
        assert len(srv.wait_workers(workers)) == workers
        assert gunicorn_settings(srv.env)["threads"] == threads
        r = requests.post(srv.url + "/predict", data=encode(photo()),
                          headers={"Content-Type": "image/png"}, timeout=30)
        assert r.status_code == 200, r.text


def test_sigterm_closes_connections_waiting_for_a_request_at_once(model_dir):
    """An idle connection and a kept-alive one would otherwise hold a stopping worker for
    HEADER_TIMEOUT (here 60 s); the worker ends those waits as soon as SIGTERM lands."""
    with GunicornServer(model_dir / "export.pkl",
                        env={"WEB_CONCURRENCY": "1", "HEADER_TIMEOUT": "60"}) as server:
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        kept = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        try:
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(kept, timeout=30).status == 200  # then kept alive
            assert wait_until(lambda: server.serves_connection_from(idle), 15)
            stopped = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            assert idle.recv(1) == b"" and kept.recv(1) == b""  # closed by the server
            assert time.monotonic() - stopped < 15
        finally:
            idle.close()
            kept.close()
        assert server.wait_exit(30) == 0, server.log_tail()
