"""GET /model, /healthz, /readyz, /metrics, /openapi.json, X-Request-ID; responses match OpenAPI."""
from __future__ import annotations

import base64
import io
import re

import pytest
from flask import Blueprint, Flask
from jsonschema import ValidationError
from openapi_spec_validator import validate as validate_spec
from setuptools.config.pyprojecttoml import read_configuration

from app.model_service import model_service
from app.version import VERSION
from harness.hostile_images import png_declaring
from harness.images import TEXT, encode, photo
from tests.app.openapi_check import CheckedClient, check_response, validate
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def doc(app):
    r = app.test_client().get("/openapi.json")
    assert r.status_code == 200
    body = r.get_json()
    assert body["openapi"].startswith("3.")
    return body


def test_document_is_valid_openapi(doc):
    validate_spec(doc)


def object_schemas(node):
    """Every schema of type object in a part of the document."""
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield node
        for value in node.values():
            yield from object_schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from object_schemas(value)


def test_every_object_schema_is_closed(make_app, tmp_path_factory):
    """Answers and requests: an object with a field the document does not list is invalid."""
    app = make_app(API_KEY="k", ALLOW_URL_FETCH="1",
                   FEEDBACK_DIR=str(tmp_path_factory.mktemp("fb")))
    doc = app.test_client().get("/openapi.json").get_json()
    objects = list(object_schemas([doc["paths"], doc["components"]]))
    assert len(objects) > 20
    assert all(schema["additionalProperties"] is False for schema in objects)


def test_one_version_for_the_project_and_its_api(doc):
    """pyproject.toml's version (as setuptools reads it) is the document's."""
    project = read_configuration(ROOT / "pyproject.toml")["project"]
    assert project["version"] == doc["info"]["version"] == VERSION


def test_every_test_client_fails_an_answer_the_document_does_not_describe(doc):
    """An app whose answers stray from the document, through the test client every test gets."""
    api = Blueprint("api", __name__)
    api.add_url_rule("/openapi.json", "openapi", lambda: doc)
    app = Flask(__name__)
    app.register_blueprint(api)
    answers = {"/healthz": {"status": "ok", "extra": 1},
               "/undocumented": {"status": "ok"},
               "/model": ({"error": {"code": "not_found", "message": "x"}}, 404),
               "/readyz": ({"error": {"code": "too_many_connections", "message": "x"}}, 503)}
    for path, answer in answers.items():
        app.add_url_rule(path, path, lambda answer=answer: answer)
    app.register_error_handler(  # where no route answers
        404, lambda _: ({"error": {"code": "method_not_allowed", "message": "x"}}, 404))
    client = app.test_client()
    assert isinstance(client, CheckedClient)
    with pytest.raises(ValidationError, match="extra"):
        client.get("/healthz")
    with pytest.raises(AssertionError, match="not in the OpenAPI document"):
        client.get("/undocumented")
    with pytest.raises(AssertionError, match="404 is not documented"):
        client.get("/model")
    with pytest.raises(AssertionError, match="too_many_connections not in"):
        client.get("/readyz")
    with pytest.raises(AssertionError, match="method_not_allowed answered with 404"):
        client.get("/nowhere")


def test_model_describes_notebook_export(client, model_dir):
    from fastai.learner import load_learner

    from classifier.model_files import sha256_file

    info = client.get("/model").get_json()
    learn = load_learner(model_dir / "export.pkl", cpu=True)
    assert info["vocab"] == list(learn.dls.vocab)
    assert info["arch"] == "resnet18"
    assert info["image_size"] == [32, 32]  # the notebook's Resize(32)
    assert info["sha256"] == sha256_file(model_dir / "export.pkl")
    assert info["metrics"] == {}
    assert info["runtime"] == "onnx"  # INFERENCE_RUNTIME unset (auto), and resnet18 converts
    assert re.match(r"\d{4}-\d\d-\d\dT", info["created_at"])


def test_health_and_ready(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.get_json()["status"] == "ready"


def test_not_ready_until_warm_up_succeeds(app, monkeypatch):
    service = model_service(app)
    client = app.test_client()
    monkeypatch.setattr(service, "_warm_pid", None)  # as in a freshly forked worker
    monkeypatch.setattr(service.predictor, "warm_up",
                        lambda: (_ for _ in ()).throw(RuntimeError("no memory")))
    assert service.warm_up() is False
    r = client.get("/readyz")
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "model_unavailable"
    assert "no memory" in r.get_json()["error"]["message"]
    r = client.post("/predict", data=encode(photo()), content_type="image/png")
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "model_unavailable"
    monkeypatch.undo()
    assert client.get("/readyz").status_code == 200


def test_request_id_echoed_or_made(client):
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    made = client.get("/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    hostile = client.get("/healthz", headers={"X-Request-ID": "x\" injected=1 " + "a" * 300})
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["X-Request-ID"])
    assert client.get("/nope").headers["X-Request-ID"]


def metric(client, name: str, **labels) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_requests_latency_and_labels(client):
    before = metric(client, "classifier_http_requests_total", endpoint="/predict", status="200")
    before_bad = metric(client, "classifier_http_requests_total", endpoint="/predict",
                        status="400")
    before_lat = metric(client, "classifier_http_request_duration_seconds_count",
                        endpoint="/predict", status="200")
    r = client.post("/predict", data=encode(photo()), content_type="image/png")
    label = r.get_json()["label"]
    before_label = metric(client, "classifier_predictions_total", label=label)
    client.post("/predict", data=encode(photo()), content_type="image/png")
    client.post("/predict", data=TEXT, content_type="image/png")
    assert metric(client, "classifier_http_requests_total", endpoint="/predict",
                  status="200") == before + 2
    assert metric(client, "classifier_http_requests_total", endpoint="/predict",
                  status="400") == before_bad + 1
    assert metric(client, "classifier_http_request_duration_seconds_count",
                  endpoint="/predict", status="200") == before_lat + 2
    assert metric(client, "classifier_predictions_total", label=label) == before_label + 1
    client.get("/random/path/123")
    assert "/random/path" not in client.get("/metrics").get_data(as_text=True)
    assert client.get("/metrics").mimetype == "text/plain"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_real_responses_match_openapi(client, doc):
    image = encode(photo())
    cases = [
        ("/predict", "POST", client.post("/predict", data=image, content_type="image/png")),
        ("/predict", "POST", client.post("/predict", data={"file": [
            (io.BytesIO(image), "a.png"), (io.BytesIO(image), "b.png")]})),
        ("/predict", "POST", client.post("/predict")),
        ("/predict", "POST", client.post("/predict", data=TEXT, content_type="image/png")),
        ("/predict", "POST", client.post("/predict", data=png_declaring(100_000, 100_000),
                                         content_type="image/png")),
        ("/predict", "POST", client.post("/predict", data=b"{}",
                                         content_type="text/plain")),
        ("/predict", "POST", client.post("/predict", json={"image": b64(image)})),
        ("/predict", "POST", client.post("/predict", json={"images": [b64(image)] * 2})),
        ("/predict", "POST", client.post("/predict", json={"image": "%%%"})),
        ("/model", "GET", client.get("/model")),
        ("/healthz", "GET", client.get("/healthz")),
        ("/readyz", "GET", client.get("/readyz")),
        ("/metrics", "GET", client.get("/metrics")),
        ("/openapi.json", "GET", client.get("/openapi.json")),
    ]
    for path, method, response in cases:
        check_response(doc, path, method, response)
    assert {c[2].status_code for c in cases} >= {200, 400, 413, 415}


def test_schema_check_can_fail(doc):
    prediction = {"$ref": "#/components/schemas/Prediction"}
    with pytest.raises(ValidationError):
        validate({"label": "a", "index": 0, "confidence": 2.0, "probabilities": {}},
                 prediction, doc)
    with pytest.raises(ValidationError):
        validate({"label": "a", "index": "0", "confidence": 0.5, "probabilities": {}},
                 prediction, doc)
    with pytest.raises(ValidationError):
        validate({"error": {"code": "made_up", "message": "x"}},
                 {"$ref": "#/components/schemas/Error"}, doc)
