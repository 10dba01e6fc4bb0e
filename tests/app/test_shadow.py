"""A shadow candidate (SHADOW_MODEL, app/shadow.py): its top-1 agreement with the live model
counts what it should (1.0 for an identical candidate, 0 for one whose classes are rotated), it
never changes nor holds up an answer, a shadow that fails to load leaves the server serving,
one that does not fit the memory limit refuses start-up, and `training.compare --field` reads
its figures from /metrics or /shadow."""
from __future__ import annotations

import json
import threading

import pytest

from app import machine
from app.model_service import model_service
from app.shadow import QUEUE_REQUESTS
from classifier.images import DEFAULT_MAX_IMAGE_PIXELS
from classifier.model_files import ModelLoadError
from classifier.versions import move_pointer
from harness.images import encode, photo
from harness.versions import make_rotated_version, make_version
from training import compare

LIVE, SAME, ROTATED, QUEUED, TAMPERED, FIELD = (f"20261205-09{m}000-abcde{m}" for m in range(6))
IMAGES = 12


@pytest.fixture(scope="module")
def models(notebook_export, tmp_path_factory):
    """models/ with LIVE served; copies of it; ROTATED disagreeing; TAMPERED corrupted."""
    root = tmp_path_factory.mktemp("models")
    for name in (LIVE, SAME, QUEUED, TAMPERED, FIELD):
        make_version(root, notebook_export, name)
    make_rotated_version(root, notebook_export, ROTATED, tmp_path_factory.mktemp("rotated"))
    with open(root / "versions" / TAMPERED / "export.pkl", "ab") as fh:
        fh.write(b"tampered")
    move_pointer(root, LIVE, "promote")
    return root


def post_images(client, n: int = IMAGES, one_by_one: bool = True) -> list[dict]:
    """`n` answers; `one_by_one`: each after the shadow has done the one before (the test
    client sends faster than a shadow in a thread keeps up, and the queue would drop some)."""
    answers, shadow = [], model_service(client.application).shadow
    for seed in range(n):
        r = client.post("/predict", data=encode(photo(seed=seed)), content_type="image/png")
        assert r.status_code == 200, r.get_json()
        answers.append(r.get_json())
        if shadow and one_by_one:
            shadow.drain()
    return answers


def pair(client, shadow: str) -> dict:
    pairs = client.get("/shadow").get_json()["pairs"]
    return next(p for p in pairs if p["live"] == LIVE and p["shadow"] == shadow)


def shadowed_app(app_for, models, shadow: str, share: float = 1.0):
    """Both models on f32 engines: the fastest engine is measured per thread count (the shadow
    runs on one), and a bf16 one could flip a near tie and so an identical candidate's answer."""
    return app_for(models / "export.pkl", SHADOW_MODEL=shadow, SHADOW_SHARE=share,
                   INFERENCE_PRECISION="exact")


def figures_after_images(app_for, models, shadow: str):
    """The client of a server with `shadow` on every request, and its pair after IMAGES."""
    client = shadowed_app(app_for, models, shadow).test_client()
    post_images(client)
    return client, pair(client, shadow)


def test_an_identical_candidate_agrees_on_every_image(app_for, models):
    client, figures = figures_after_images(app_for, models, SAME)
    assert figures["images"] == IMAGES and figures["agreement"] == 1.0, figures
    assert figures["requests"] == {"shadowed": IMAGES, "dropped": 0, "failed": 0}
    assert sum(row["images"] for row in figures["per_class"]) == IMAGES
    assert client.get("/model").get_json()["shadow"] == {
        "version": SAME, "share": 1.0, "serving": True, "refused": None}


def test_a_candidate_that_disagrees_on_purpose_shows_low_agreement(app_for, models):
    client, figures = figures_after_images(app_for, models, ROTATED)
    assert figures["images"] == IMAGES and figures["agreement"] == 0.0
    metrics = client.get("/metrics").get_data(as_text=True)
    assert any(line.startswith("classifier_shadow_images_total{") and f'shadow="{ROTATED}"'
               in line for line in metrics.splitlines())


def test_answers_are_the_same_with_and_without_a_shadow(app_for, models):
    plain = post_images(app_for(models / "export.pkl", INFERENCE_PRECISION="exact").test_client())
    app = shadowed_app(app_for, models, ROTATED)
    shadowed = post_images(app.test_client())
    model_service(app).shadow.drain()
    assert shadowed == plain


def test_the_shadow_never_holds_up_an_answer_and_drops_work_when_behind(app_for, models,
                                                                        monkeypatch):
    app = shadowed_app(app_for, models, QUEUED)
    client, shadow = app.test_client(), model_service(app).shadow
    release, started = threading.Event(), threading.Event()
    predict = shadow.model.predictor.predict_prepared

    def stuck(items):
        started.set()
        release.wait(30)
        return predict(items)

    monkeypatch.setattr(shadow.model.predictor, "predict_prepared", stuck)
    post_images(client, 1, one_by_one=False)
    assert started.wait(10)  # the consumer holds the first request, stuck
    post_images(client, QUEUE_REQUESTS + 3, one_by_one=False)  # answered: 4 queue, 3 dropped
    release.set()
    shadow.drain()
    assert pair(client, QUEUED)["requests"] == {"shadowed": QUEUE_REQUESTS + 1, "dropped": 3,
                                                "failed": 0}


def test_a_shadow_that_fails_to_load_leaves_the_server_serving(app_for, models, caplog):
    app = shadowed_app(app_for, models, TAMPERED)
    client = app.test_client()
    assert post_images(client, 1)[0]["version"] == LIVE
    shadow = client.get("/model").get_json()["shadow"]
    assert shadow["serving"] is False and "does not match export.json" in shadow["refused"]
    assert f"SHADOW_MODEL {TAMPERED} refused, serving without a shadow" in caplog.text
    assert client.get("/shadow").get_json()["shadow"]["refused"] == shadow["refused"]


def test_a_shadow_that_does_not_fit_the_memory_limit_refuses_start_up(app_for, models,
                                                                      monkeypatch):
    monkeypatch.setattr(machine, "memory_limit", lambda *args: 512 * machine.MB)
    with pytest.raises(ModelLoadError, match=f"SHADOW_MODEL={SAME} does not fit"):
        app_for(models / "export.pkl", SHADOW_MODEL=SAME, WEB_CONCURRENCY=1)


def test_a_resnet18_shadow_does_not_fit_the_lean_512_mb_machine_but_fits_2_gb(tmp_path):
    model = 45 * machine.MB  # resnet18, as the memory suite measured it
    graph = tmp_path / "export.onnx"
    graph.write_bytes(b"\0" * model)
    shadow = machine.shadow_bytes(tmp_path / "export.pkl", 1)
    assert shadow == 2 * model  # once in the master, once in the worker's session
    assert not machine.shadow_fits(512 * machine.MB, "lean", 1, model, shadow,
                                   DEFAULT_MAX_IMAGE_PIXELS)
    assert machine.shadow_fits(2048 * machine.MB, "lean", 1, model, shadow,
                               DEFAULT_MAX_IMAGE_PIXELS)
    assert machine.shadow_fits(None, "lean", 1, model, shadow, DEFAULT_MAX_IMAGE_PIXELS)


def test_compare_prints_the_field_figures_beside_its_verdict(app_for, models, tmp_path,
                                                             monkeypatch, capsys):
    client = shadowed_app(app_for, models, FIELD).test_client()
    post_images(client, 2)
    model_service(client.application).shadow.drain()
    saved = {"metrics": client.get("/metrics").get_data(as_text=True),
             "json": json.dumps(client.get("/shadow").get_json())}
    scored = compare.Scored("x", None, {"n": 0}, None)
    test = {"only_a_right": 0, "only_b_right": 0, "p_value": 1.0}
    monkeypatch.setattr(compare, "compare", lambda root, a, b: (scored, scored, test, [], None))
    monkeypatch.setattr(compare, "summary", lambda *args: "verdict: no measurable difference")
    monkeypatch.setattr(compare, "write_page", lambda *args: None)
    for kind, text in saved.items():
        source = tmp_path / kind
        source.write_text(text)
        assert compare.main(["--models", str(models), "live", FIELD, "--field", str(source)]) == 0
        out = capsys.readouterr().out
        assert f"B {FIELD} beside A {LIVE} on 2 images: top-1 agreement 1.0" in out, out
    assert compare.main(["--models", str(models), "live", FIELD, "--field",
                         str(tmp_path / "missing")]) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_monitor_shows_the_shadows_agreement_and_not_sure_rate(app_for, models):
    client = shadowed_app(app_for, models, ROTATED).test_client()
    post_images(client)
    page = client.get("/monitor").get_data(as_text=True)
    assert f"Shadow {ROTATED} beside {LIVE}" in page
    row = page[page.index("top-1 agreement with the live model"):]
    assert "0.0%" in row[:200]
    assert "not sure when the shadow says" in page
    plain = app_for(models / "export.pkl", INFERENCE_PRECISION="exact").test_client()
    assert "Shadow " not in plain.get("/monitor").get_data(as_text=True)
