"""The real gunicorn server follows models/live.json under load from 8 clients: a promote and
then a rollback with 0 failed requests, the answers' version changing within seconds each time;
SIGHUP makes the workers look at once; a tampered version is refused while the old one serves."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import requests

from classifier.versions import move_pointer
from harness import load
from harness.images import encode, photo
from harness.servers import GunicornServer
from harness.versions import VersionProbe, make_version

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

V1, V2, V3 = "20261205-090000-aaaaaa", "20261205-091000-bbbbbb", "20261205-092000-cccccc"
IMAGE = ("photo.png", encode(photo()), "image/png")
SWITCH_SECONDS = 15  # poll interval + loading a tiny model beside the old one, on a busy machine


@pytest.fixture()
def versions(notebook_export, tmp_path):
    for name in (V1, V2, V3):
        make_version(tmp_path, notebook_export, name)
    move_pointer(tmp_path, V1, "promote")
    return tmp_path


def test_promote_then_rollback_under_load_fail_no_request(versions):
    env = {"WEB_CONCURRENCY": 2, "THREADS": 4, "MODEL_POLL_SECONDS": 1}
    stop = threading.Event()
    with GunicornServer(versions / "export.pkl", env=env) as server:
        background, holder = load.in_background(server.url, clients=8, seconds=3600,
                                                stop=stop)
        with VersionProbe(server.url, IMAGE) as probe:
            probe.wait_for(V1, time.monotonic())
            moved = time.monotonic()
            move_pointer(versions, V2, "promote")
            promote_s = probe.wait_for(V2, moved)
            moved = time.monotonic()
            move_pointer(versions, V1, "rollback")
            rollback_s = probe.wait_for(V1, moved)
        stop.set()
        background.join(timeout=60)
        run = holder["run"]
        assert len(run.ok) > 20, run.summary()
        assert not run.failures, [(r.status, r.error) for r in run.failures[:5]]
        assert promote_s < SWITCH_SECONDS and rollback_s < SWITCH_SECONDS, (promote_s, rollback_s)
        assert server.alive() and "now serving version " + V2 in server.log_text()


def test_sighup_swaps_at_once_and_a_tampered_version_is_refused(versions):
    env = {"WEB_CONCURRENCY": 2, "THREADS": 2, "MODEL_POLL_SECONDS": 3600}
    with open(versions / "versions" / V3 / "export.pkl", "ab") as fh:
        fh.write(b"tampered")
    with GunicornServer(versions / "export.pkl", env=env) as server:
        with VersionProbe(server.url, IMAGE) as probe:
            probe.wait_for(V1, time.monotonic())
            move_pointer(versions, V2, "promote")
            os.kill(server.proc.pid, signal.SIGHUP)  # the master forwards it to every worker
            probe.wait_for(V2, time.monotonic(), timeout=SWITCH_SECONDS)

            move_pointer(versions, V3, "promote", forced=True)
            os.kill(server.proc.pid, signal.SIGHUP)
            deadline = time.monotonic() + SWITCH_SECONDS
            while server.log_text().count(f"version {V3} refused") < 2:  # both workers
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.2)
            since = time.monotonic()
            probe.wait_for(V2, since)  # the old one keeps serving
            assert all(v == V2 for at, v in probe.answers if at >= since)
        info = requests.get(server.url + "/model", timeout=10).json()
        assert info["version"] == V2 and "does not match export.json" in info["refused"]["reason"]
        metrics = requests.get(server.url + "/metrics", timeout=10).text
        assert f'classifier_model_versions_refused_total{{version="{V3}"}} 2.0' in metrics
        assert len(server.worker_pids()) == 2  # no worker was restarted: swapped in place
