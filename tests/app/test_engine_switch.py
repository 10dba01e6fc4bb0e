"""A cache miss does not hold start-up: onnxruntime f32 serves at once while the engines are
measured in the background, and the server switches to the chosen one when it is known; a
failed measurement leaves f32 serving and says why. PyTorch for explanations loads only after
the timings, which it would skew."""
from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time

import pytest

from app import explainer
from app.model_service import model_service
from classifier import engine_cache, engine_choice
from classifier.engine_choice import measure_all
from classifier.engines import DEFAULT_ENGINE, ENGINES, Engine
from harness.images import encode, photo
from harness.waiting import wait_until


def engine_of(client) -> dict:
    return client.get("/model").get_json()["engine"]


def wait_for_choice(client, timeout_s: float = 60) -> dict:
    """/model's engine once the background measurement has ended."""
    deadline = time.monotonic() + timeout_s
    while (engine := engine_of(client))["measured"] == "measuring":
        assert time.monotonic() < deadline, "the engine measurement never ended"
        time.sleep(0.1)
    return engine


@pytest.fixture()
def fresh_model(model_dir, tmp_path):
    """The served model in a folder of its own: no cached engine choice beside it."""
    folder = shutil.copytree(model_dir, tmp_path / "served",
                             ignore=shutil.ignore_patterns("engine-choice-*"))
    return folder / "export.pkl"


def slow_engine(release: threading.Event, answered: list) -> Engine:
    """onnxruntime's answers, a little changed (well within the budget) and remembered, so
    faster than onnxruntime itself; opening it waits for `release`, as a slow measurement."""
    def open_graph(graph, threads):
        release.wait(30)
        forward, memo = ENGINES[DEFAULT_ENGINE].open(graph, threads), {}

        def answer(batch):
            answered.append(len(batch))
            key = batch.tobytes()
            if key not in memo:
                logits, features = forward(batch)  # (logits, pooled features)
                logits[:, 0] += 1e-4
                memo[key] = logits, features
            return memo[key]
        return answer

    return Engine("openvino-f32", "onnxruntime", "f32", open_graph)  # a name /model's schema knows


def test_a_cache_miss_serves_at_once_and_switches_when_measured(app_for, fresh_model, monkeypatch):
    release, answered = threading.Event(), []
    fake = slow_engine(release, answered)
    monkeypatch.setitem(ENGINES, fake.name, fake)
    monkeypatch.setattr(engine_cache, "measure_in_child", lambda graph, reference, threads:
                        measure_all([ENGINES[DEFAULT_ENGINE], fake], graph, reference, threads))
    client = app_for(fresh_model, INFERENCE_RUNTIME="auto").test_client()
    try:
        assert client.get("/readyz").status_code == 200
        r = client.post("/predict", data=encode(photo()), content_type="image/png")
        assert r.status_code == 200, r.get_json()
        engine = engine_of(client)
        assert engine["measured"] == "measuring" and engine["engine"] == DEFAULT_ENGINE
        assert answered == []  # f32 answered
    finally:
        release.set()
    engine = wait_for_choice(client)
    assert engine["engine"] == fake.name, engine
    assert list(fresh_model.parent.glob("engine-choice-*.measuring")) == []  # the lock is gone
    before = len(answered)
    r = client.post("/predict", data=encode(photo()), content_type="image/png")
    assert r.status_code == 200 and len(answered) == before + 1


def test_a_failed_measurement_leaves_f32_serving_and_says_why(app_for, fresh_model, monkeypatch,
                                                            caplog):
    monkeypatch.setattr(engine_choice, "CHILD_TIMEOUT_S", 0.001)
    caplog.set_level(logging.WARNING, "classifier.engine_choice")
    client = app_for(fresh_model, INFERENCE_RUNTIME="auto").test_client()
    assert client.get("/readyz").status_code == 200
    engine = wait_for_choice(client)
    assert engine["engine"] == DEFAULT_ENGINE and engine["measured"] is None
    assert "engines not measured (TimeoutExpired" in caplog.text
    assert list(fresh_model.parent.glob("engine-choice-*")) == []  # measured again at next start
    r = client.post("/predict", data=encode(photo()), content_type="image/png")
    assert r.status_code == 200, r.get_json()


def test_pytorch_for_explanations_loads_only_after_the_engines_are_timed(app_for, fresh_model,
                                                                          monkeypatch):
    """Two workers importing PyTorch beside the timings made OpenVINO bf16 measure 30.6 ms per
    image where it runs in 8.7 (serve_bench, 2026-12-05): the choice rests on those times."""
    release, answered = threading.Event(), []
    fake = slow_engine(release, answered)
    monkeypatch.setitem(ENGINES, fake.name, fake)
    monkeypatch.setattr(engine_cache, "measure_in_child", lambda graph, reference, threads:
                        measure_all([ENGINES[DEFAULT_ENGINE], fake], graph, reference, threads))
    app = app_for(fresh_model, INFERENCE_RUNTIME="auto")
    loads = []
    monkeypatch.setattr(explainer, "load_torch_predictor",
                        lambda path, threads: loads.append(path) or object())
    service = model_service(app)  # as a gunicorn worker after its warm-up: in the background
    service.model = dataclasses.replace(service.model,
                                        explainer=explainer.DeferredExplainer(fresh_model, 1))
    try:
        service.load_explanations(background=True)
        time.sleep(0.5)
        assert loads == [] and service.model.explanations == "loading"
    finally:
        release.set()
    assert wait_for_choice(app.test_client())["engine"] == fake.name
    assert wait_until(lambda: service.model.explanations == "ready", 30)
    assert loads == [fresh_model]
