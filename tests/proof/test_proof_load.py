"""Load and faults against a real gunicorn with the shipped defaults (workers, threads).

1. C clients for T seconds: zero failed requests; throughput and p50/p95/p99 recorded.
2. kill -9 one worker under load: the service keeps answering; only requests in flight on the
   killed worker may fail (at most one per client), and gunicorn replaces the worker.
3. SIGTERM to the master under load: requests already sent complete (including one whose
   body is still arriving when the signal lands), then the master exits 0.
The three run in this order on one server (the last one stops it). PROOF_LOAD_SECONDS and
PROOF_LOAD_CLIENTS scale the slice; benchmarks/load_test.py is the long version.
"""
from __future__ import annotations

import os
import signal
import socket
import time
from collections import Counter

import pytest

from app.config import load_settings
from harness.images import image_bytes
from harness.load import drive, in_background
from harness.raw_http import read_response, upload
from harness.servers import GunicornServer
from harness.shipped_config import gunicorn_settings
from harness.waiting import wait_until
from tests.proof.conftest import record_figures

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENTS = int(os.environ.get("PROOF_LOAD_CLIENTS", "4"))
SECONDS = float(os.environ.get("PROOF_LOAD_SECONDS", "10"))


@pytest.fixture(scope="module")
def server(proof_model, tmp_path_factory):
    srv = GunicornServer(proof_model, log_path=tmp_path_factory.mktemp("load") / "gunicorn.log")
    srv.start()
    srv.conf = gunicorn_settings(srv.env)
    srv.workers = len(srv.wait_workers(1))
    yield srv
    srv.stop()


def test_load_zero_failures(server):
    drive(server.url, clients=1, seconds=1)  # warm every worker's runtime session first
    peak = [server.rss_bytes()]
    thread, holder = in_background(server.url, CLIENTS, SECONDS)
    while thread.is_alive():
        peak.append(server.rss_bytes())
        thread.join(timeout=0.25)
    run = holder["run"]
    summary = run.summary()
    record_figures(load=summary, load_rss_peak_mb=round(max(peak) / 2**20),
                   load_workers=server.workers, load_threads=server.conf.get("threads"))
    print("\nload:", summary, f"peak RSS {max(peak) / 2**20:.0f} MB")
    assert summary["requests"] > 0
    assert not run.failures, [f"{r.status} {r.error}" for r in run.failures[:10]]


def test_kill_9_a_worker_under_load(server):
    before = server.wait_workers(server.workers)
    victim = before[0]
    thread, holder = in_background(server.url, CLIENTS, SECONDS)
    time.sleep(SECONDS / 3)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=SECONDS + 60)
    run = holder["run"]
    summary = run.summary()
    failed = run.failures
    answered_after = [r for r in run.ok if r.start > killed_at]
    record_figures(kill9=dict(summary, failures=len(failed)))
    print("\nkill -9:", summary, [f"{r.status} {r.error}" for r in failed])
    assert server.alive(), "the master died with its worker"
    assert answered_after, "nothing was answered after the worker was killed"
    assert all(r.status is None or r.status < 500 for r in failed), "a 5xx after the kill"
    # Only requests in flight on the killed worker may fail: at most one per client.
    per_client = Counter(r.client for r in failed)
    assert max(per_client.values(), default=0) <= 1, (per_client, [r.error for r in failed])
    # A client's connection to the dead worker is used again or dropped within gunicorn's
    # keep-alive; later failures mean the service itself is failing.
    window = float(server.conf["keepalive"]) + 1.0
    late = [r for r in failed if r.start > killed_at + window]
    assert not late, f"failures more than {window}s after the kill: {late}"
    after = server.wait_workers(server.workers, exclude=(victim,), timeout=60)
    assert victim not in after and len(after) == server.workers


def test_sigterm_drains_in_flight_requests(server):
    server.wait_workers(server.workers)
    read_timeout = load_settings(server.env).read_timeout
    graceful = float(server.conf["graceful_timeout"])
    thread, holder = in_background(server.url, CLIENTS, SECONDS)
    time.sleep(SECONDS / 3)
    # One request whose body is still arriving when SIGTERM lands: half-sent just before the
    # signal, the rest after it, the pause well under READ_TIMEOUT.
    raw = upload("/predict", image_bytes("PNG"), "a.png", "image/png")
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=graceful)
    try:
        slow.sendall(raw[:len(raw) // 2])
        half_sent = time.monotonic()
        assert wait_until(lambda: server.serves_connection_from(slow), read_timeout / 4)
        sent_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert wait_until(lambda: "Handling signal: term" in server.log_text(), read_timeout / 4)
        silent = time.monotonic() - half_sent
        slow.sendall(raw[len(raw) // 2:])
        out = read_response(slow, timeout=graceful)
    finally:
        slow.close()
    code = server.wait_exit(graceful + 15)
    thread.join(timeout=SECONDS + 60)
    run = holder["run"]
    before = [r for r in run.records if r.start < sent_at - 0.05]
    lost = [r for r in before if r.status != 200]
    after = [r for r in run.records if r.start >= sent_at - 0.05]
    record_figures(sigterm=dict(run.summary(), exit_code=code, in_flight_lost=len(lost),
                                sent_before_signal=len(before),
                                refused_after_signal=sum(r.status != 200 for r in after),
                                slow_upload_status=out.status))
    print("\nSIGTERM:", run.summary(), "exit", code, "slow upload", out.status, out.error)
    assert silent < read_timeout / 2, f"the half-sent upload was silent {silent:.1f}s"
    assert out.status == 200, f"the request mid-upload at SIGTERM got {out.status} {out.error}"
    assert not lost, [f"{r.status} {r.error}" for r in lost[:10]]
    server_errors = [(r.status, r.error) for r in run.records if r.status and r.status >= 500]
    assert not server_errors, server_errors[:10]
    assert code == 0, f"master exit code {code} after SIGTERM:\n{server.log_tail(20)}"
    assert wait_until(lambda: not server.group_pids(), 10), "workers outlived the master"
