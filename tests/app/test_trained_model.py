"""Serving the model our own training CLI writes: export.json metadata, checksum, examples."""
from __future__ import annotations

import json

import pytest

from app import ModelLoadError

pytestmark = pytest.mark.slow  # trains a model with the CLI first


@pytest.fixture(scope="module")
def trained_client(make_app, trained_model):
    return make_app(MODEL_PATH=str(trained_model)).test_client()


def test_model_reports_export_json(trained_client, trained_model):
    metadata = json.loads(trained_model.with_suffix(".json").read_text())
    info = trained_client.get("/model").get_json()
    assert info["vocab"] == metadata["vocab"]
    assert info["sha256"] == metadata["sha256"]
    assert info["created_at"] == metadata["created_at"]
    assert info["metrics"] == metadata["metrics"]
    assert info["arch"] == metadata["arch"]
    assert info["image_size"] == metadata["image_size"]


def test_examples_from_training_are_one_click(trained_client, trained_model):
    page = trained_client.get("/").get_data(as_text=True)
    on_disk = sorted(p.relative_to(trained_model.parent / "examples").as_posix()
                     for p in (trained_model.parent / "examples").glob("*/*") if p.is_file())
    assert on_disk
    for name in on_disk[:3]:
        assert f'value="{name}"' in page
        r = trained_client.post("/", data={"example": name}, content_type="multipart/form-data")
        assert r.status_code == 200 and b'id="result-label"' in r.data


def test_predictions_use_the_trained_vocab(trained_client, trained_model):
    example = next((trained_model.parent / "examples").glob("*/*"))
    r = trained_client.post("/predict", data=example.read_bytes(), content_type="image/png")
    assert r.status_code == 200
    body = r.get_json()
    assert list(body["probabilities"]) == json.loads(
        trained_model.with_suffix(".json").read_text())["vocab"]


def test_replaced_model_file_is_refused(make_app, trained_model, tmp_path, notebook_export):
    import shutil
    version = tmp_path / "version"
    shutil.copytree(trained_model.parent, version)  # the whole version: export.json lists each file
    shutil.copy(notebook_export, version / "export.pkl")  # another file under its name
    with pytest.raises(ModelLoadError, match="does not match"):
        make_app(MODEL_PATH=str(version / "export.pkl"))
