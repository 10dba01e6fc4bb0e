"""The default image starts on the compiled graph (app/explainer.py): a worker is ready and
answers /predict before torch is imported; ?explain=1 answers 503 `explanations_loading` with
Retry-After until PyTorch is loaded behind it, and explains afterwards.

Each case runs in a fresh process (torch is imported in this one), which builds the app as
gunicorn does: the master's create_app() after serve_preloaded(), then a worker's
post_worker_init (warm-up, explanations loading in the background), here without the fork.
The background load is held at a gate until the requests that must come before it are made.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import requests

from harness.images import encode, photo
from harness.servers import GunicornServer
from harness.waiting import wait_until
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

WORKER = """
import io, json, sys, threading, time
from PIL import Image
import app.explainer as explainer
gate, load = threading.Event(), explainer.load_torch_predictor
explainer.load_torch_predictor = lambda *args: (gate.wait(120), load(*args))[1]
from app import create_app, serve_preloaded
from app.config import load_settings
from app.model_service import model_service

serve_preloaded(load_settings(overrides={"MODEL_PATH": sys.argv[1]}))  # as gunicorn.conf.py
app = create_app()  # the master
out = {"torch_in_master": "torch" in sys.modules}
service = model_service(app)
service.warm_up()  # the worker's post_worker_init
service.load_explanations(background=True)
client = app.test_client()
buf = io.BytesIO(); Image.new("RGB", (57, 41), (220, 30, 30)).save(buf, "PNG")

def post(query=""):
    r = client.post("/predict" + query, data=buf.getvalue(), content_type="image/png")
    return {"status": r.status_code, "body": r.get_json(), "retry_after": r.headers.get("Retry-After")}

out["readyz"] = client.get("/readyz").get_json()
out["predict"] = post()
out["explain_while_loading"] = post("?explain=1")
out["torch_before_gate"] = "torch" in sys.modules
gate.set()
deadline = time.monotonic() + 120
while client.get("/readyz").get_json().get("explanations") == "loading" and time.monotonic() < deadline:
    time.sleep(0.1)
out["readyz_after"] = client.get("/readyz").get_json()
out["explain_after"] = post("?explain=1")
from classifier.loader import load_model
torch_predictor, _ = load_model(sys.argv[1], "torch")
out["torch_probabilities"] = torch_predictor.predict(Image.open(buf).convert("RGB")).probabilities
print(json.dumps(out))
"""


def run_worker(model) -> dict:
    env = {key: value for key, value in os.environ.items()
           if key not in ("INFERENCE_RUNTIME", "EXPLANATIONS")}
    result = subprocess.run([sys.executable, "-c", WORKER, str(model)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def version(trained_model, tmp_path_factory):
    """A copy of the session's trained version: export.pkl with its graph, checked when
    training compiled it (export.onnx.json's checked_gap)."""
    folder = tmp_path_factory.mktemp("fast-start") / "models"
    shutil.copytree(trained_model.parent, folder)
    assert json.loads((folder / "export.onnx.json").read_text())["checked_gap"] <= 1e-4
    return folder / "export.pkl"


def test_ready_and_predicting_before_torch_explaining_after(version):
    out = run_worker(version)
    assert out["torch_in_master"] is False
    assert out["readyz"] == {"status": "ready", "runtime": "onnx", "explanations": "loading"}
    assert out["predict"]["status"] == 200
    loading = out["explain_while_loading"]
    assert loading["status"] == 503 and loading["retry_after"] is not None
    assert loading["body"]["error"]["code"] == "explanations_loading"
    assert out["torch_before_gate"] is False  # /readyz, /predict and the 503 ran without it

    assert out["readyz_after"]["explanations"] == "ready"
    explained = out["explain_after"]
    assert explained["status"] == 200, explained["body"]
    assert explained["body"]["explanation"]["method"] == "grad-cam"
    assert explained["body"]["explanation"]["label"] == explained["body"]["label"]
    # the graph served at once answers as PyTorch does (its check when compiled: 1e-4)
    served = out["predict"]["body"]["probabilities"]
    assert max(abs(served[k] - p) for k, p in out["torch_probabilities"].items()) <= 1e-4


def test_a_graph_without_a_recorded_check_is_not_served_before_torch(version, tmp_path):
    """No checked_gap in the sidecar (a graph from elsewhere): torch loads at start, as the
    parity check at load needs it, and the master serves only after that check."""
    for name in ("export.pkl", "export.onnx"):  # a bare export: no export.json lists them
        shutil.copy(version.parent / name, tmp_path / name)
    meta = json.loads((version.parent / "export.onnx.json").read_text())
    del meta["checked_gap"]
    (tmp_path / "export.onnx.json").write_text(json.dumps(meta))
    out = run_worker(tmp_path / "export.pkl")
    assert out["torch_in_master"] is True
    assert out["readyz"]["explanations"] == "ready"
    assert out["explain_while_loading"]["status"] == 200


@pytest.mark.e2e
def test_gunicorn_workers_load_pytorch_behind_the_graph_and_explain(version):
    """The real server on a first start: each worker measures the engines (a child process),
    then imports torch in one of its real threads, under gevent. app/worker.py keeps
    subprocess and os unpatched for it: ctypes.util.find_library's command failed in gevent's
    subprocess, and after the measurement's child it hung with gevent's os.waitpid."""
    for cached in version.parent.glob("engine-choice-*"):
        cached.unlink()
    with GunicornServer(version, env={"WEB_CONCURRENCY": "1"}, ready_timeout=240) as server:
        def explanations() -> str:
            return requests.get(server.url + "/readyz", timeout=10).json()["explanations"]

        wait_until(lambda: explanations() != "loading", 240)
        assert explanations() == "ready", server.log_tail()
        r = requests.post(server.url + "/predict?explain=1", timeout=60,
                          files={"file": ("a.png", encode(photo()), "image/png")})
        assert r.status_code == 200, r.text
        assert r.json()["explanation"]["method"] == "grad-cam"
        engine = requests.get(server.url + "/model", timeout=10).json()["engine"]
        assert engine["measured"] not in (None, "measuring"), engine
