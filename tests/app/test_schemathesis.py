"""schemathesis, an independent fuzzer, against the real server, driven by its /openapi.json.

The server is the README's `gunicorn -c gunicorn.conf.py "app:create_app()"` (through
harness.servers), with an API key (so the auth checks run) and FEEDBACK_DIR (so /feedback is
on). Every check is on (`--checks all`); the run is bounded (examples per operation, a
deterministic generator) and writes nothing beside the repository.

Positive cases carry real images (tests/app/schemathesis_hooks.py): no schema can say
"bytes that decode", and random bytes are the hostile corpus's job (tests/app/test_errors.py).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

from harness.servers import GunicornServer
from harness.waiting import wait_until
from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEY = "schemathesis-key"
EXAMPLES = 30  # per operation, in the fuzzing phase; the coverage phase adds its own cases
# No check is excluded. Two are given their bounds here:
# - negative_data_rejection accepts 413 as a rejection beside schemathesis's own 4xx list:
#   too many images (over maxItems) is refused as payload_too_large, which is what it is.
# - max_response_time (--max-response-time below) is a bound for hangs, not for speed: a
#   batch with explain=1 on a busy 2-core machine took 20 s once (benchmarks/ time speed).
CONFIG = """
hooks = "tests.app.schemathesis_hooks"
[cache]
enabled = false
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]
"""
OPTIONS = ["--checks", "all", "--max-response-time", "60", "--request-timeout", "90",
           "--max-examples", str(EXAMPLES), "--generation-deterministic", "--workers", "1",
           "--output-truncate", "true", "--no-color"]


def test_schemathesis_finds_nothing(trained_model, tmp_path):
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    report = tmp_path / "report.json"
    # MAX_BATCH=4: the same limits at the edges, for fewer Grad-CAMs per batch.
    env = {"API_KEY": KEY, "FEEDBACK_DIR": str(tmp_path / "feedback"), "MAX_BATCH": "4",
           "WEB_CONCURRENCY": "1"}
    with GunicornServer(trained_model, env=env) as server:
        # the worker loads PyTorch behind the compiled graph (app/explainer.py): until then
        # explain=1 answers 503 explanations_loading, which is not what is fuzzed here
        wait_until(lambda: requests.get(server.url + "/readyz").json()["explanations"] != "loading",
                   240)
        operations = sum(len(ops) for ops in
                         requests.get(server.url + "/openapi.json").json()["paths"].values())
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file",
             str(tmp_path / "schemathesis.toml"), "run", server.url + "/openapi.json",
             *OPTIONS, "-H", f"Authorization: Bearer {KEY}",
             "--report", "json", "--report-json-path", str(report)],
            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    summary = json.loads(report.read_text())
    # every operation but GET /openapi.json, the document it runs from
    assert summary["operations"]["tested"] == operations - 1, summary["operations"]
    assert summary["phases"]["coverage"]["status"] == "success"
    assert summary["phases"]["fuzzing"]["status"] == "success"
    assert not summary["warnings"]["missing_test_data"], summary["warnings"]
    assert summary["test_cases"]["generated"] >= EXAMPLES * 2
