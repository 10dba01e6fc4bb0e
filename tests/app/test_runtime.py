"""INFERENCE_RUNTIME: which runtime serves, and what happens when the export has no ONNX form
or its compiled graph does not answer as PyTorch does."""
from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from fastai.learner import load_learner
from fastai.torch_core import trainable_params
from torch import nn

from app import ModelLoadError
from app.config import load_settings
from app.model_service import model_service
from app.setting_parsers import ConfigError
from classifier.engine_choice import BUDGETS
from classifier.engines import ENGINES
from classifier.model_files import sha256_file
from classifier.onnx_compile import export_graph
from classifier.onnx_model import FORMAT, graph_path, read_compiled, sidecar_path
from harness.images import encode, photo
from tests.app.test_engine_switch import wait_for_choice


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


class Shifted(nn.Module):
    """A network whose logits are another's plus 0, 1, 2, ...: far beyond the parity bound."""

    def __init__(self, model: nn.Module, classes: int):
        super().__init__()
        self.model, self.shift = model, torch.arange(classes, dtype=torch.float32)

    def forward(self, x):
        return self.model(x) + self.shift


@pytest.fixture(scope="module")
def graphs(notebook_export) -> dict[str, bytes]:
    """Compiled graphs to put beside the export: its own, one that disagrees, a corrupt one."""
    learn = load_learner(notebook_export, cpu=True)
    return {"right": export_graph(learn.model, (32, 32)),
            "disagreeing": export_graph(Shifted(learn.model, len(learn.dls.vocab)), (32, 32)),
            "corrupt": b"not an ONNX graph"}


def compiled_beside(export, folder, graph: bytes):
    """A copy of `export` with `graph` as the graph compiled at image build: export.onnx and
    a sidecar naming this .pkl's sha256, so the server takes it as current."""
    folder.mkdir()
    model = folder / "export.pkl"
    shutil.copy(export, model)
    graph_path(model).write_bytes(graph)
    sidecar_path(model).write_text(json.dumps({"format": FORMAT, "pkl_sha256": sha256_file(model)}))
    assert read_compiled(model) is not None
    return model


@pytest.mark.parametrize("graph, runtime, logged", [
    ("right", "onnx", "using the ONNX graph compiled at image build"),
    ("disagreeing", "torch", "onnxruntime not used (onnxruntime differs from PyTorch by"),
    ("corrupt", "torch", "onnxruntime not used ("),
])
def test_a_compiled_graph_serves_only_in_parity_with_pytorch(
        make_app, notebook_export, graphs, tmp_path, caplog, graph, runtime, logged):
    """INFERENCE_RUNTIME=auto falls back to PyTorch, and says so in the log and in /model,
    when the compiled graph's logits differ from PyTorch's beyond the bound, or it cannot run."""
    model = compiled_beside(notebook_export, tmp_path / "models", graphs[graph])
    with caplog.at_level(logging.INFO):
        app = make_app(MODEL_PATH=str(model), INFERENCE_RUNTIME="auto")
    assert served_runtime(app) == runtime
    assert logged in caplog.text
    assert ("serving with PyTorch" in caplog.text) == (runtime == "torch")
    r = app.test_client().post("/predict", data=encode(photo()), content_type="image/png")
    assert r.status_code == 200, r.get_json()


def test_onnx_demanded_with_a_disagreeing_graph_stops_start_up(make_app, notebook_export, graphs,
                                                                tmp_path):
    model = compiled_beside(notebook_export, tmp_path / "models", graphs["disagreeing"])
    with pytest.raises(ModelLoadError, match="INFERENCE_RUNTIME=onnx: RuntimeError: "
                                             "onnxruntime differs from PyTorch"):
        make_app(MODEL_PATH=str(model), INFERENCE_RUNTIME="onnx")


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


@pytest.mark.parametrize("precision", ["auto", "exact"])
def test_model_and_log_say_which_engine_runs_the_graph(make_app, model_dir, notebook_export,
                                                       caplog, precision):
    """Every engine here is measured against PyTorch on the model's examples; /model and the
    start-up log say which serves and why; with `exact` it answers within 1e-4 of learn.predict."""
    with caplog.at_level(logging.INFO):
        app = make_app(INFERENCE_RUNTIME="auto", INFERENCE_PRECISION=precision)
        assert app.test_client().get("/readyz").status_code == 200
        engine = wait_for_choice(app.test_client())  # a cache miss is measured after start-up
    rows = {row["engine"]: row for row in engine["candidates"]}
    assert engine["precision"] == precision and set(rows) == set(ENGINES)
    chosen = rows[engine["engine"]]
    assert chosen["agreement"] == 1.0 and chosen["gap"] <= BUDGETS[precision].gap
    assert chosen["precision"] in BUDGETS[precision].precisions
    if caplog.text:  # empty when an earlier test built this same app
        assert f"engine {engine['engine']} (INFERENCE_PRECISION={precision})" in caplog.text
    if precision == "exact":
        example = model_dir / "examples" / "red" / "red.png"
        expected = load_learner(notebook_export, cpu=True).predict(example)[2].numpy()
        r = app.test_client().post("/predict", data=example.read_bytes(), content_type="image/png")
        got = list(r.get_json()["probabilities"].values())
        assert max(abs(a - b) for a, b in zip(got, expected)) <= 1e-4


def test_a_bad_inference_precision_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^INFERENCE_PRECISION must be auto, exact or int8, not 'fast'\.$"):
        load_settings({"INFERENCE_PRECISION": "fast"})
