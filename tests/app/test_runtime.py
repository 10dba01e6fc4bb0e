"""INFERENCE_RUNTIME: which runtime serves, and what happens when the export has no ONNX form."""
from __future__ import annotations

import pytest
import torch
from fastai.learner import load_learner
from fastai.torch_core import trainable_params
from torch import nn

from app import ModelLoadError
from app.model_service import model_service
from harness.images import encode, photo


@pytest.fixture(scope="module")
def unconvertible_export(notebook_export, tmp_path_factory):
    """A learner ONNX cannot express: adaptive pooling to a size that does not divide the
    input's (32 px to 5x5) has no ONNX form. Built from torch's own modules, so it loads
    anywhere."""
    learn = load_learner(notebook_export, cpu=True)
    learn.model = nn.Sequential(nn.AdaptiveAvgPool2d(5), nn.Flatten(),
                                nn.Linear(3 * 5 * 5, len(learn.dls.vocab)))
    learn.splitter = trainable_params  # resnet's splitter expects resnet's layout
    path = tmp_path_factory.mktemp("unconvertible") / "export.pkl"
    learn.export(path)
    return path


def served_runtime(app) -> str:
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    return client.get("/model").get_json()["runtime"]


@pytest.mark.parametrize("setting, expected", [("", "onnx"), ("auto", "onnx"), ("onnx", "onnx"),
                                               ("torch", "torch")])
def test_runtime_follows_the_setting(make_app, setting, expected):
    assert served_runtime(make_app(INFERENCE_RUNTIME=setting)) == expected


def test_auto_falls_back_to_pytorch(make_app, unconvertible_export):
    app = make_app(MODEL_PATH=str(unconvertible_export), INFERENCE_RUNTIME="auto")
    assert served_runtime(app) == "torch"
    r = app.test_client().post("/predict", data=encode(photo()), content_type="image/png")
    assert r.status_code == 200, r.get_json()


def test_onnx_demanded_but_impossible_stops_start_up(make_app, unconvertible_export):
    with pytest.raises(ModelLoadError) as exc:
        make_app(MODEL_PATH=str(unconvertible_export), INFERENCE_RUNTIME="onnx")
    message = str(exc.value)
    assert "INFERENCE_RUNTIME=onnx" in message and "\n" not in message


@pytest.fixture
def restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("restore_torch_threads")
@pytest.mark.parametrize("runtime, outside_model", [("onnx", 1), ("torch", 3)])
def test_torch_threads_follow_the_runtime(make_app, runtime, outside_model):
    """torch runs the network on INFERENCE_THREADS; beside onnxruntime it keeps one thread
    for preprocessing (idle OpenMP threads would spin on onnxruntime's cores) and gets
    INFERENCE_THREADS back while Grad-CAM runs the model."""
    predictor = model_service(make_app(INFERENCE_RUNTIME=runtime, INFERENCE_THREADS="3")).predictor
    assert torch.get_num_threads() == outside_model
    with predictor.running_model():
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == outside_model
