"""The lean image's model: export.pkl compiled to ONNX + preprocessing, served without torch."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from classifier import onnx_model
from classifier.onnx_compile import CompileError, compile_model
from classifier.onnx_model import graph_path, read_compiled, sidecar_path
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

# Serve a model through the Flask app with torch and fastai made unimportable, as in the
# lean image, and print /model and the /predict answers for a few generated images.
SERVE_WITHOUT_TORCH = """
import io, json, sys
if sys.argv[2] == "lean":
    sys.modules["torch"] = sys.modules["fastai"] = None
from PIL import Image
from app import create_app
client = create_app({"MODEL_PATH": sys.argv[1]}).test_client()
out = {"model": client.get("/model").get_json(), "answers": []}
for colour, size in (((220, 30, 30), (57, 41)), ((30, 200, 40), (20, 90)), ((30, 40, 220), (300, 200))):
    buf = io.BytesIO(); Image.new("RGB", size, colour).save(buf, "PNG")
    reply = client.post("/predict", data={"file": (io.BytesIO(buf.getvalue()), "x.png")})
    out["answers"].append(reply.get_json())
out["torch_loaded"] = bool(sys.modules.get("torch"))
print(json.dumps(out))
"""


def serve(model, mode: str) -> dict:
    result = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_TORCH, str(model), mode],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
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
    lean, full = serve(compiled, "lean"), serve(compiled, "torch")
    assert lean["torch_loaded"] is False and full["torch_loaded"] is True
    assert lean["model"]["runtime"] == "onnx-lean"
    # Grad-CAM needs the PyTorch model, which only the default image has.
    assert lean["model"]["explanations"] is False and full["model"]["explanations"] is True
    differ = ("runtime", "explanations")
    assert {k: v for k, v in lean["model"].items() if k not in differ} == \
        {k: v for k, v in full["model"].items() if k not in differ}
    for mine, theirs in zip(lean["answers"], full["answers"]):
        assert mine["label"] == theirs["label"]
        assert max(abs(mine["probabilities"][k] - theirs["probabilities"][k])
                   for k in theirs["probabilities"]) <= 1e-4


def test_lean_app_refuses_a_stale_compiled_model(compiled, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(compiled.parent, models)
    with open(models / "export.pkl", "ab") as fh:  # the .pkl changed after compiling
        fh.write(b"\0")
    assert read_compiled(models / "export.pkl") is None
    result = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_TORCH, str(models / "export.pkl"),
                             "lean"], cwd=ROOT, capture_output=True, text=True, timeout=300)
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
