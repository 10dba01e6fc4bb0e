"""What /predict says besides the label: unsure + threshold, top classes, the Grad-CAM explanation.

Also the parameters that shape it (top_k, threshold, explain) with their bad values, the
settings behind them (UNSURE_THRESHOLD, EXPLANATIONS), and the OpenAPI document of it all.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil

import pytest
import torch
from PIL import Image

from app.config import load_settings
from app.model_service import model_service
from app.setting_parsers import ConfigError
from classifier.explain import grad_cam
from harness.images import encode, photo
from tests.app.openapi_check import check_response

PNG = encode(photo(seed=5))


def post(client, query: str = "", data: bytes = PNG):
    return client.post("/predict" + (f"?{query}" if query else ""), data=data,
                       content_type="image/png")


@pytest.fixture(scope="module")
def doc(client):
    return client.get("/openapi.json").get_json()


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def judged_model(trained_model, tmp_path_factory):
    """A copy of a trained model whose export.json carries the threshold training chose."""
    folder = tmp_path_factory.mktemp("judged")
    # The whole version: export.json lists every file's sha256, and a missing one is refused.
    shutil.copytree(trained_model.parent, folder, dirs_exist_ok=True)
    metadata = json.loads((folder / "export.json").read_text())
    metadata["unsure"] = {"threshold": 0.999, "method": "lowest threshold reaching 95% "
                          "precision on validation"}
    (folder / "export.json").write_text(json.dumps(metadata))
    return folder / "export.pkl"


# -- top classes ------------------------------------------------------------
def test_top_lists_the_most_probable_classes_highest_first(client, app):
    vocab = model_service(app).info["vocab"]
    body = post(client).get_json()
    assert list(body["probabilities"]) == vocab  # complete, in vocab order
    ranked = sorted(body["probabilities"].items(), key=lambda kv: -kv[1])
    assert body["top"] == [{"label": k, "probability": p} for k, p in ranked][:5]
    assert len(body["top"]) == min(5, len(vocab))
    assert body["top"][0]["label"] == body["label"]
    assert body["top"][0]["probability"] == body["confidence"]


@pytest.mark.parametrize("top_k, length", [("1", 1), ("2", 2), ("99", 3)])
def test_top_k_sets_the_length(client, top_k, length):
    body = post(client, f"top_k={top_k}").get_json()
    assert len(body["top"]) == length
    assert len(body["probabilities"]) == 3  # unchanged by top_k


# -- not sure ---------------------------------------------------------------
def test_notebook_export_has_no_threshold_and_is_never_unsure(client):
    body = post(client).get_json()
    assert body["threshold"] is None and body["unsure"] is False
    info = client.get("/model").get_json()
    assert info["unsure"] == {"threshold": None, "source": None, "method": None}


def test_threshold_per_request_flags_low_confidence_and_keeps_the_label(client):
    plain = post(client).get_json()
    confidence = plain["confidence"]
    above = post(client, f"threshold={min(1.0, confidence + 0.01)}").get_json()
    assert above["unsure"] is True and above["label"] == plain["label"]
    assert above["threshold"] == pytest.approx(min(1.0, confidence + 0.01))
    at = post(client, f"threshold={confidence!r}").get_json()
    assert at["unsure"] is False  # unsure means strictly below the threshold
    assert post(client, "threshold=0").get_json()["unsure"] is False


def test_unsure_threshold_setting_applies_server_wide_and_requests_override_it(make_app):
    client = make_app(UNSURE_THRESHOLD="1").test_client()
    body = post(client).get_json()
    assert body["threshold"] == 1.0 and body["unsure"] is True
    assert post(client, "threshold=0").get_json()["unsure"] is False
    assert client.get("/model").get_json()["unsure"]["source"] == "UNSURE_THRESHOLD"


def test_threshold_from_export_json_and_unsure_threshold_over_it(make_app, judged_model):
    client = make_app(MODEL_PATH=str(judged_model)).test_client()
    info = client.get("/model").get_json()
    assert info["unsure"]["threshold"] == 0.999 and info["unsure"]["source"] == "export.json"
    assert info["unsure"]["method"].startswith("lowest threshold")
    body = post(client).get_json()
    assert body["threshold"] == 0.999 and body["unsure"] == (body["confidence"] < 0.999)
    server = make_app(MODEL_PATH=str(judged_model), UNSURE_THRESHOLD="0.25").test_client()
    assert post(server).get_json()["threshold"] == 0.25


@pytest.mark.parametrize("raw", ["2", "-0.1", "abc", "nan", "inf"])
def test_unsure_threshold_setting_must_be_a_fraction(raw):
    with pytest.raises(ConfigError, match="UNSURE_THRESHOLD must be a number from 0 to 1"):
        load_settings(environ={"UNSURE_THRESHOLD": raw})


def test_explanations_setting_is_on_or_off():
    assert load_settings(environ={}).explanations is True
    assert load_settings(environ={"EXPLANATIONS": "off"}).explanations is False
    with pytest.raises(ConfigError, match="EXPLANATIONS must be on or off"):
        load_settings(environ={"EXPLANATIONS": "maybe"})


# -- explanation --------------------------------------------------------------
def decode_data_url(url: str, kind: str = "png") -> Image.Image:
    prefix = f"data:image/{kind};base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix):])))


def test_explain_returns_a_heatmap_over_the_photo_as_the_model_saw_it(client, app):
    body = post(client, "explain=1").get_json()
    explanation = body["explanation"]
    assert explanation["method"] == "grad-cam" and explanation["label"] == body["label"]
    image = decode_data_url(explanation["image"])
    height, width = model_service(app).info["image_size"]
    assert image.format == "PNG" and image.size == (width, height) and image.mode == "RGB"
    assert "explanation" not in post(client, "explain=0").get_json()
    assert "explanation" not in post(client).get_json()


def test_explain_in_a_batch_explains_each_image(client):
    r = client.post("/predict?explain=true", data={"file": [
        (io.BytesIO(PNG), "a.png"), (io.BytesIO(encode(photo(seed=9))), "b.png")]},
        content_type="multipart/form-data")
    answers = r.get_json()["predictions"]
    assert [a["filename"] for a in answers] == ["a.png", "b.png"]
    assert all(a["explanation"]["label"] == a["label"] for a in answers)


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_without_the_pytorch_model_explain_is_a_409_of_its_own(make_app, runtime):
    app = make_app(EXPLANATIONS="off", INFERENCE_RUNTIME=runtime)
    service = model_service(app)
    # With onnxruntime serving, the PyTorch weights are freed: nothing to run Grad-CAM on.
    assert (service.predictor.model is None) == (runtime == "onnx")
    client = app.test_client()
    r = post(client, "explain=1")
    assert r.status_code == 409
    assert r.get_json()["error"]["code"] == "explanation_unavailable"
    assert "EXPLANATIONS=off" in r.get_json()["error"]["message"]
    assert post(client).status_code == 200  # predictions are unaffected
    assert client.get("/model").get_json()["explanations"] is False


class StubPredictor:
    """A 'network' whose class-1 score is the mean red of the image: Grad-CAM must find red."""

    vocab = ("other", "red")

    def __init__(self):
        conv = torch.nn.Conv2d(3, 2, kernel_size=1, bias=False)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[1, 0] = 1.0  # channel 1 = red
        self.model = torch.nn.Sequential(conv, torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())).eval()

    @contextlib.contextmanager
    def running_model(self):
        yield self.model

    def model_input(self, items):
        return torch.stack(items).float() / 255


def test_grad_cam_heat_is_where_the_evidence_is():
    item = torch.zeros(3, 32, 32, dtype=torch.uint8)
    item[0, 4:12, 20:28] = 255  # a red patch, top right
    heat = grad_cam(StubPredictor(), item, index=1)
    assert heat.shape == (32, 32) and heat.max() == pytest.approx(1.0)
    assert heat[4:12, 20:28].mean() > 0.9 and heat[20:, :12].mean() < 0.1


# -- bad values -------------------------------------------------------------
@pytest.mark.parametrize("query, name", [
    ("top_k=0", "top_k"), ("top_k=-1", "top_k"), ("top_k=2.5", "top_k"), ("top_k=x", "top_k"),
    ("top_k=", "top_k"), ("threshold=2", "threshold"), ("threshold=-0.1", "threshold"),
    ("threshold=nan", "threshold"), ("threshold=abc", "threshold"), ("explain=yes", "explain"),
    ("explain=2", "explain"), ("explain=", "explain")])
def test_bad_values_are_400_invalid_parameter_naming_it(client, doc, query, name):
    r = post(client, query)
    assert r.status_code == 400
    error = r.get_json()["error"]
    assert error["code"] == "invalid_parameter"
    assert error["message"].startswith(f"{name} must be ")
    check_response(doc, "/predict", "POST", r)


def test_bad_values_are_refused_before_the_image_is_read(client):
    r = post(client, "top_k=0", data=b"not an image")
    assert r.get_json()["error"]["code"] == "invalid_parameter"


# -- OpenAPI --------------------------------------------------------------------
def test_openapi_describes_the_new_fields_and_parameters(client, doc):
    schema = doc["components"]["schemas"]["Prediction"]
    assert {"unsure", "threshold", "top", "explanation"} <= set(schema["properties"])
    assert {"unsure", "threshold", "top"} <= set(schema["required"])
    params = {p["name"]: p for p in doc["paths"]["/predict"]["post"]["parameters"]}
    assert set(params) == {"top_k", "threshold", "explain"}
    assert all(p["description"] for p in params.values())
    responses = doc["paths"]["/predict"]["post"]["responses"]
    assert "invalid_parameter" in responses["400"]["description"]
    assert "explanation_unavailable" in responses["409"]["description"]
    for query in ("", "explain=1&top_k=2&threshold=1", "threshold=0.5"):
        check_response(doc, "/predict", "POST", post(client, query))
    check_response(doc, "/model", "GET", client.get("/model"))
