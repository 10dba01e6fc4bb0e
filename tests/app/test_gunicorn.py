"""The real server: `gunicorn -c gunicorn.conf.py "app:create_app()"` on a free port, over HTTP."""
from __future__ import annotations

import re
import threading

import pytest
import requests

from tests.app.samples import TEXT, encode, photo
from tests.servers import GunicornServer


@pytest.fixture(scope="module")
def server(model_dir):
    with GunicornServer(model_dir / "export.pkl",
                        env={"WEB_CONCURRENCY": "2", "THREADS": "4",
                             "MAX_UPLOAD_MB": "1"}) as srv:
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
    assert page.status_code == 200 and 'accept="image/*"' in page.text
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


def test_metrics_merge_all_workers(server):
    before = total(requests.get(server.url + "/metrics", timeout=10).text,
                   "classifier_http_requests_total", endpoint="/healthz", status="200")

    def hit():
        with requests.Session() as s:  # fresh connections spread over both workers
            for _ in range(10):
                s.get(server.url + "/healthz", timeout=10, headers={"Connection": "close"})
    threads = [threading.Thread(target=hit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    text = requests.get(server.url + "/metrics", timeout=10).text
    assert total(text, "classifier_http_requests_total", endpoint="/healthz",
                 status="200") == before + 40
    pids = {int(p) for p in re.findall(r'pid="(\d+)"', text)}
    assert not pids or pids <= set(server.worker_pids())  # no per-pid explosion from the dead


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


def test_sigterm_drains_and_exits_zero(server):
    """Last in this module: it stops the module's server."""
    results = []
    slow = threading.Thread(target=lambda: results.append(requests.post(
        server.url + "/predict",
        files=[("file", (f"{i}.png", encode(photo((400, 300), seed=i)))) for i in range(16)],
        timeout=60).status_code))
    slow.start()
    code = server.terminate(timeout=30)
    slow.join(60)
    assert code == 0, server.log_tail()
    assert "Handling signal: term" in server.log_text()
    assert results in ([200], [])  # in flight: answered; not yet accepted: refused
    assert not server.alive() and not server.worker_pids()
