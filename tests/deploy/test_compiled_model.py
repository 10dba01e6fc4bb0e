"""The lean image's model: export.pkl compiled to ONNX + preprocessing, served without torch."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from classifier import onnx_model
from classifier import predict as predict_cli
from classifier.images import DECODE_MARGIN, RESIZE_ONLY_MARGIN
from classifier.int8 import int8_path
from classifier.model_files import sha256_file
from classifier.onnx_compile import CompileError, compile_model
from classifier.onnx_model import graph_path, read_compiled, sidecar_path
from harness.images import EXT, encode, photo
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

# On PYTHONPATH, makes torch, torchvision and fastai unimportable, as in the lean image.
NO_TORCH = Path(__file__).parent / "no_torch"

# Serve a model through the Flask app and print /model and the /predict answers for a few
# generated images; INFERENCE_PRECISION=exact (or argv[2]) keeps the engines within 1e-4 of learn.predict.
SERVE = """
import io, json, sys, time
from PIL import Image
from app import create_app
client = create_app({"MODEL_PATH": sys.argv[1], "INFERENCE_PRECISION": (sys.argv[2:] or ["exact"])[0]}).test_client()
for _ in range(1200):  # a first start measures the engines in the background
    if (client.get("/model").get_json()["engine"] or {}).get("measured") != "measuring":
        break
    time.sleep(0.1)
out = {"model": client.get("/model").get_json(), "answers": []}
for colour, size in (((220, 30, 30), (57, 41)), ((30, 200, 40), (20, 90)), ((30, 40, 220), (300, 200))):
    buf = io.BytesIO(); Image.new("RGB", size, colour).save(buf, "PNG")
    reply = client.post("/predict", data={"file": (io.BytesIO(buf.getvalue()), "x.png")})
    out["answers"].append(reply.get_json())
out["torch_loaded"] = bool(sys.modules.get("torch"))
print(json.dumps(out))
"""


def run_python(args: list[str], mode: str) -> subprocess.CompletedProcess:
    """`python ARGS` in a fresh process: "lean" without torch and fastai, else as installed."""
    path = [str(NO_TORCH)] if mode == "lean" else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(ROOT)])}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def serve(model, mode: str, precision: str = "exact") -> dict:
    result = run_python(["-c", SERVE, str(model), precision], mode)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def compiled(trained_model, tmp_path_factory):
    """A copy of the session's trained model, compiled by the build's own command."""
    models = tmp_path_factory.mktemp("compiled") / "models"
    shutil.copytree(trained_model.parent, models)
    result = subprocess.run([sys.executable, "-m", "classifier.onnx_compile", str(models / "export.pkl")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "largest difference from learn.predict" in result.stdout
    return models / "export.pkl"


def test_compiled_model_answers_like_the_torch_app_without_torch(compiled):
    """Also decoded alike: the session's model trained without augmentation, so both decode at
    its margin (the 300x200 PNG reduced by 6, not 3, for its 32 px input)."""
    assert json.loads(sidecar_path(compiled).read_text())["decode_margin"] == RESIZE_ONLY_MARGIN
    lean, full = serve(compiled, "lean"), serve(compiled, "torch")
    assert lean["torch_loaded"] is False and full["torch_loaded"] is True
    assert lean["model"]["runtime"] == "onnx-lean"
    # Grad-CAM needs the PyTorch model, which only the default image has.
    assert lean["model"]["explanations"] is False and full["model"]["explanations"] is True
    differ = ("runtime", "explanations", "engine")  # engine: each measures on its own
    assert {k: v for k, v in lean["model"].items() if k not in differ} == \
        {k: v for k, v in full["model"].items() if k not in differ}
    for mine, theirs in zip(lean["answers"], full["answers"]):
        assert mine["label"] == theirs["label"]
        assert max(abs(mine["probabilities"][k] - theirs["probabilities"][k])
                   for k in theirs["probabilities"]) <= 1e-4


def test_the_int8_copy_is_compiled_and_measured_without_torch(compiled):
    """The compile step writes the graph's int8 copy (calibrated on the examples mirrored) and
    records its sha256; with INFERENCE_PRECISION=int8 the lean app measures it on onnxruntime
    and answers within int8's budget of the exact answers, whichever engine it chose."""
    meta = json.loads(sidecar_path(compiled).read_text())
    assert meta["int8_sha256"] == sha256_file(int8_path(graph_path(compiled)))
    exact, int8 = serve(compiled, "lean"), serve(compiled, "lean", "int8")
    rows = {row["engine"]: row for row in int8["model"]["engine"]["candidates"]}
    assert rows["onnxruntime-int8"]["precision"] == "int8" and rows["onnxruntime-int8"]["ms"] > 0
    assert "int8 admitted" in int8["model"]["engine"]["reason"]
    for mine, theirs in zip(int8["answers"], exact["answers"]):
        assert mine["label"] == theirs["label"]
        assert max(abs(mine["probabilities"][k] - theirs["probabilities"][k])
                   for k in theirs["probabilities"]) <= 0.1


def test_a_version_without_its_pkl_serves_lean_only(compiled, tmp_path):
    """The lean image drops every export.pkl (Dockerfile); the version's export.json still lists
    it. Without torch that is the expected layout; with torch the missing .pkl is refused."""
    models = tmp_path / "models"
    shutil.copytree(compiled.parent, models)
    assert "export.pkl" in json.loads((models / "export.json").read_text())["files"]
    (models / "export.pkl").unlink()
    assert serve(models / "export.pkl", "lean")["model"]["runtime"] == "onnx-lean"
    result = run_python(["-c", SERVE, str(models / "export.pkl")], "torch")
    assert result.returncode != 0 and "listed in export.json but missing" in result.stderr


def test_lean_app_refuses_a_stale_compiled_model(compiled, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(compiled.parent, models)
    # An export.json without the version's list of files (a model from before versions), so
    # the graph's own staleness check is the one that acts, not the per-file sha256 check.
    card = json.loads((models / "export.json").read_text())
    card.pop("files", None)
    (models / "export.json").write_text(json.dumps(card))
    with open(models / "export.pkl", "ab") as fh:  # the .pkl changed after compiling
        fh.write(b"\0")
    assert read_compiled(models / "export.pkl") is None
    result = run_python(["-c", SERVE, str(models / "export.pkl")], "lean")
    assert result.returncode != 0
    assert "missing or stale" in result.stderr


def test_compile_fails_when_preprocessing_differs_from_learn_predict(compiled, monkeypatch, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(compiled.parent, models)
    for path in (graph_path(models / "export.pkl"), sidecar_path(models / "export.pkl")):
        path.unlink()
    # A compiled model that answers with its classes in the wrong order.
    right = onnx_model.CompiledPredictor._probabilities
    monkeypatch.setattr(onnx_model.CompiledPredictor, "_probabilities",
                        lambda self, items: right(self, items)[:, ::-1])
    with pytest.raises(CompileError, match="differs from learn.predict"):
        compile_model(models / "export.pkl")
    assert not graph_path(models / "export.pkl").exists()  # nothing half-written


def test_notebook_export_compiles_and_serves_without_torch(notebook_export, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(notebook_export, models / "export.pkl")
    gap = compile_model(models / "export.pkl")
    assert gap <= 1e-4
    meta = json.loads(sidecar_path(models / "export.pkl").read_text())
    assert meta["preprocessing"]["steps"][0]["op"] == "resize"
    assert meta["decode_margin"] == DECODE_MARGIN  # trained on full decodes
    # no examples to calibrate on: no int8 copy
    assert meta["int8_sha256"] is None and not int8_path(graph_path(models / "export.pkl")).exists()
    lean, full = serve(models / "export.pkl", "lean"), serve(models / "export.pkl", "torch")
    for mine, theirs in zip(lean["answers"], full["answers"]):
        assert max(abs(mine["probabilities"][k] - theirs["probabilities"][k])
                   for k in theirs["probabilities"]) <= 1e-4


def test_compile_check_gives_the_graph_the_pixels_learn_predict_decodes(trained_model, tmp_path):
    """Our loader shrinks a large image before the resize; the check must do the same, or a
    sensitive model fails its own build (a 300x200 noise image differed by 4e-2 on the demo)."""
    from classifier.model_files import load_learner_checked
    from classifier.onnx_compile import check_images, largest_difference

    learner, _ = load_learner_checked(trained_model)
    large = [p for p in check_images(trained_model, tmp_path) if p.name == "generated_300x200.png"]
    seen = []

    class Recording:
        def probabilities(self, images):
            seen.extend(image.size for image in images)
            return learner.predict(large[0])[2].double().numpy()[None]

    largest_difference(learner, Recording(), large)
    expected = learner.dls.test_dl(large).dataset.tfms(large[0]).size
    assert seen == [expected] and expected != (300, 200)


def test_no_torch_blocks_torch_torchvision_and_fastai():
    result = run_python(["-c", "import importlib.util as u; assert u.find_spec('torch') is None; "
                         "import torch"], "lean")
    assert result.returncode == 1 and "ModuleNotFoundError: No module named 'torch'" in result.stderr
    for name in ("torchvision.models", "fastai.learner"):
        assert run_python(["-c", f"import {name}"], "lean").returncode == 1


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three photos and a file that is not one."""
    folder = tmp_path_factory.mktemp("photos")
    for i, (colour, fmt) in enumerate((((220, 30, 30), "PNG"), ((30, 200, 40), "JPEG"),
                                       ((30, 40, 220), "WEBP"))):
        suffix = "." + EXT[fmt]
        (folder / f"{i}{suffix}").write_bytes(encode(photo(seed=i, colour=colour), fmt))
    (folder / "notes.png").write_text("not an image")
    return folder


def test_batch_cli_runs_on_the_compiled_graph_without_torch(compiled, photos, tmp_path):
    out = tmp_path / "lean.csv"
    result = run_python(["-m", "classifier.predict", str(compiled), str(photos), "--out", str(out)],
                        "lean")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 of 4 images classified" in result.stderr
    assert predict_cli.main([str(compiled), str(photos), "--runtime", "torch",
                             "--out", str(tmp_path / "torch.csv")]) == 0
    lean, full = (list(csv.DictReader(f.open())) for f in (out, tmp_path / "torch.csv"))
    assert [r["path"] for r in lean] == [r["path"] for r in full] and len(lean) == 4
    assert list(lean[0]) == list(full[0])  # the same columns
    for mine, theirs in zip(lean, full):
        for column, value in theirs.items():
            if column in ("path", "label", "unsure", "error", "version") or not value:
                assert mine[column] == value
            else:  # confidence and one probability per class
                assert abs(float(mine[column]) - float(value)) <= 1e-4


@pytest.mark.parametrize("runtime, graph, says", [
    ("torch", True, "--runtime=torch, but torch and fastai are not installed"),
    ("auto", False, "missing or stale"),
])
def test_lean_batch_cli_refuses_with_one_line(compiled, photos, tmp_path, runtime, graph, says):
    shutil.copytree(compiled.parent, tmp_path / "models")
    model = tmp_path / "models" / "export.pkl"
    if not graph:
        graph_path(model).unlink()
    result = run_python(["-m", "classifier.predict", str(model), str(photos), "--runtime", runtime],
                        "lean")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert says in result.stderr, result.stderr


# What the lean app refuses: Grad-CAM (there is no PyTorch model), from the API and from the
# form (whose checkbox it leaves out), and INFERENCE_RUNTIME=torch at start-up.
LEAN_REFUSALS = """
import io, json, sys
from PIL import Image
from app import ModelLoadError, create_app
client = create_app({"MODEL_PATH": sys.argv[1], "INFERENCE_PRECISION": "exact"}).test_client()
buf = io.BytesIO(); Image.new("RGB", (40, 30), (220, 30, 30)).save(buf, "PNG")
api = client.post("/predict?explain=1", data={"file": (io.BytesIO(buf.getvalue()), "x.png")})
form = client.post("/", data={"file": (io.BytesIO(buf.getvalue()), "x.png"), "explain": "1"})
out = {"api": [api.status_code, api.get_json()], "form": [form.status_code, form.get_data(as_text=True)],
       "page": client.get("/").get_data(as_text=True)}
try:
    create_app({"MODEL_PATH": sys.argv[1], "INFERENCE_RUNTIME": "torch"})
    out["torch"] = "started"
except ModelLoadError as exc:
    out["torch"] = str(exc)
print(json.dumps(out))
"""


def test_lean_app_refuses_what_needs_torch(compiled):
    result = run_python(["-c", LEAN_REFUSALS, str(compiled)], "lean")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    status, body = out["api"]
    assert status == 409 and body["error"]["code"] == "explanation_unavailable"
    assert "lean image" in body["error"]["message"]
    status, page = out["form"]
    assert status == 409 and "lean image" in page
    assert 'id="explain"' not in out["page"]  # no checkbox for what it cannot do
    assert out["torch"].startswith("INFERENCE_RUNTIME=torch, but torch and fastai are not installed")
