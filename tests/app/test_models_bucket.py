"""Two real gunicorn servers follow one bucket's model versions (MODELS_URL, moto's S3 server
reached with production's s3fs client): a version pushed and promoted there is served by both
within seconds under load from 8 clients, with 0 failed requests; a rollback reaches both the
same way; a bucket that stops answering leaves the current version serving."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from classifier.versions import move_pointer
from harness import ROOT, load
from harness.images import encode, photo
from harness.object_store import S3Server
from harness.servers import GunicornServer, run_to_exit
from harness.versions import VersionProbe, make_version

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

A, B = "20261205-090000-aaaaaa", "20261205-091000-bbbbbb"
IMAGE = ("photo.png", encode(photo()), "image/png")
SWITCH_SECONDS = 20  # poll interval + download + loading beside the old one, on a busy machine
ENV = {"WEB_CONCURRENCY": 1, "THREADS": 4, "MODEL_POLL_SECONDS": 1}


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=ROOT, timeout=300,
                          capture_output=True, text=True)


def settle(probes, version: str) -> float:
    since = time.monotonic()
    return max(probe.wait_for(version, since, timeout=SWITCH_SECONDS) for probe in probes)


def test_a_version_promoted_through_the_bucket_reaches_both_servers(notebook_export, tmp_path):
    local = tmp_path / "models"
    for name in (A, B):
        make_version(local, notebook_export, name)
    with S3Server() as s3:
        url = s3.url("models")
        for args in (("training.versions", "--models", local, "--push", A, url),
                     ("training.promote", A, "--models", url)):
            done = cli(*args)
            assert done.returncode == 0, done.stdout + done.stderr
        env = {**ENV, "MODELS_URL": url}
        stop = threading.Event()
        with GunicornServer(tmp_path / "one" / "export.pkl", env=env) as one, \
                GunicornServer(tmp_path / "two" / "export.pkl", env=env) as two:
            runs = [load.in_background(server.url, clients=4, seconds=3600, stop=stop)
                    for server in (one, two)]
            with VersionProbe(one.url, IMAGE) as p1, VersionProbe(two.url, IMAGE) as p2:
                settle((p1, p2), A)
                done = cli("training.versions", "--models", local, "--push", B, url)
                assert done.returncode == 0 and f"pushed {B}" in done.stdout, done.stderr
                move_pointer(url, B, "promote")  # what training.promote does once compared
                promote_s = settle((p1, p2), B)
                done = cli("training.rollback", "--models", url)
                assert done.returncode == 0 and f"live: {A}" in done.stdout, done.stderr
                rollback_s = settle((p1, p2), A)

                s3.stop()  # the bucket away: the current version serves on, logged once
                time.sleep(3)
                s3.start()
                since = time.monotonic()
                settle((p1, p2), A)
                assert all(v == A for probe in (p1, p2) for at, v in probe.answers if at >= since)
            stop.set()
            for background, _ in runs:
                background.join(timeout=60)
            for server in (one, two):
                assert server.alive() and f"now serving version {B}" in server.log_text()
                assert server.log_text().count("the current version serves on") == 1
        for _, holder in runs:
            run = holder["run"]
            assert len(run.ok) > 20, run.summary()
            assert not run.failures, [(r.status, r.error) for r in run.failures[:5]]
        assert promote_s < SWITCH_SECONDS and rollback_s < SWITCH_SECONDS


def test_a_bucket_with_no_live_version_stops_start_up(tmp_path):
    with S3Server() as s3:
        code, output = run_to_exit(tmp_path / "export.pkl", timeout=120,  # moto keeps buckets
                                   env={**ENV, "MODELS_URL": s3.url("no-models-here")})
    assert code == 1 and "MODELS_URL cannot be used" in output and "has no live.json" in output
