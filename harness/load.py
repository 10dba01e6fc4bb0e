"""Closed-loop load: C clients (threads, one keep-alive connection each) posting images for T seconds.

The one load driver of the tests and benchmarks: the CI slice (tests/proof/test_proof_load.py),
`python -m benchmarks.load_test`, serve_bench, deploy_footprint and the slow-client campaign.
Every request is recorded with its start, end and outcome, so a fault injected at a known moment
(kill -9 a worker, SIGTERM the master) can be judged by what was in flight then.

The clients share the server's CPUs here, so each costs as little as it can: every image's
multipart body is encoded once, and sent on urllib3's connection pool (what requests runs on,
with requests' own retry policy: none, and no resending a request that may have been read).
In serve_bench (640x480 JPEGs, 8 clients) that is 0.6 ms of client CPU a request to our
server, against 2.1 ms with requests' per-request encoding (docs/measurements.md).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import requests
import urllib3
from urllib3.filepost import encode_multipart_formdata

from harness.images import EXT, MIME, image_bytes


@dataclass
class Record:
    start: float
    end: float
    status: int | None  # None: the request failed without an HTTP response
    error: str = ""
    client: int = 0     # which of the clients sent it


@dataclass
class LoadRun:
    clients: int
    seconds: float
    records: list[Record] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0

    @property
    def ok(self) -> list[Record]:
        return [r for r in self.records if r.status == 200]

    @property
    def failures(self) -> list[Record]:
        return [r for r in self.records if r.status != 200]

    def summary(self) -> dict:
        lat = np.array([r.end - r.start for r in self.ok]) * 1000
        wall = max(self.finished - self.started, 1e-9)
        pct = (lambda q: round(float(np.percentile(lat, q)), 1)) if len(lat) else (lambda q: None)
        return {"clients": self.clients, "seconds": round(wall, 1), "requests": len(self.records),
                "ok": len(self.ok), "failed": len(self.failures),
                "server_errors": sum(1 for r in self.records if r.status and r.status >= 500),
                "throughput_rps": round(len(self.ok) / wall, 1),
                "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99)}


def sample_images(n: int = 8, size=(64, 64)) -> list[tuple[str, bytes, str]]:
    """`n` small uploads (filename, bytes, MIME type), PNG, JPEG and WebP in turn."""
    fmts = ("PNG", "JPEG", "WEBP")
    return [(f"load{i}.{EXT[fmt]}", image_bytes(fmt, size, seed=i), MIME[fmt])
            for i, fmt in ((i, fmts[i % len(fmts)]) for i in range(n))]


def post_image(session: requests.Session, url: str, image: tuple[str, bytes, str],
               timeout: float = 30.0, headers: dict | None = None) -> requests.Response:
    """POST /predict with `image` (filename, bytes, MIME type) as the multipart `file`."""
    return session.post(url + "/predict", files={"file": image}, timeout=timeout,
                        headers=headers)


def drive(url: str, clients: int, seconds: float, images=None, stop: threading.Event | None = None,
          timeout: float = 30.0, headers: dict | None = None, warmup: float = 0.0) -> LoadRun:
    """Run the load and return every request's record. Stops at `seconds` or when `stop` is set.

    images: (filename, bytes, MIME type) tuples, sent in turn. With `warmup`, the clients run
    that many seconds first, and requests started then are not recorded."""
    images = images or sample_images()
    bodies = [encode_multipart_formdata({"file": image}) for image in images]
    path = urllib3.util.parse_url(url).path or ""
    run = LoadRun(clients, seconds)
    lock = threading.Lock()
    stop = stop or threading.Event()
    run.started = time.monotonic() + warmup
    deadline = run.started + seconds

    def connect() -> urllib3.HTTPConnectionPool:
        return urllib3.connection_from_url(url, maxsize=1, retries=urllib3.Retry(0, read=False),
                                           timeout=urllib3.Timeout(connect=timeout, read=timeout))

    def client(k: int):
        pool = connect()
        i = k
        mine = []
        while time.monotonic() < deadline and not stop.is_set():
            body, content_type = bodies[i % len(bodies)]
            i += 1
            t0 = time.monotonic()
            try:
                r = pool.request("POST", path + "/predict", body=body,
                                 headers={**(headers or {}), "Content-Type": content_type})
                rec = Record(t0, time.monotonic(), r.status,
                             "" if r.status == 200 else r.data.decode(errors="replace")[:200], k)
            except urllib3.exceptions.HTTPError as exc:
                rec = Record(t0, time.monotonic(), None, f"{type(exc).__name__}: {exc}"[:200], k)
                pool.close()
                pool = connect()
                time.sleep(0.01)  # a refused connection returns at once: do not spin
            if t0 >= run.started:
                mine.append(rec)
        pool.close()
        with lock:
            run.records.extend(mine)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=warmup + seconds + timeout + 10)
    run.finished = time.monotonic()
    run.records.sort(key=lambda r: r.start)
    return run


def in_background(url: str, clients: int, seconds: float, **kw):
    """Start drive() in a thread; returns (thread, holder) where holder['run'] is the LoadRun."""
    holder: dict = {}
    thread = threading.Thread(target=lambda: holder.update(run=drive(url, clients, seconds, **kw)),
                              daemon=True)
    thread.start()
    return thread, holder
