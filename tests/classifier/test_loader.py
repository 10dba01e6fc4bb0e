"""classifier.loader: one loader, and export.json read once into a typed ModelCard."""
from __future__ import annotations

import json
import shutil

import pytest

from classifier.loader import load_learner_card, load_model, make_card
from classifier.model_files import ModelLoadError, sha256_file

EXPORT_JSON = {
    "arch": "resnet18", "image_size": [224, 224], "sha256": "ab" * 32,
    "created_at": "2026-11-23T10:00:00+00:00",
    "metrics": {"validation": {"accuracy": 0.9, "per_class": {
        "cat": {"recall": 0.8}, "dog": {"recall": 1.0}}}},
    "unsure": {"threshold": 0.62, "method": "conformal"},
    "dataset": {"images": {"train": 120, "valid": 30}},
}


def test_the_card_holds_export_jsons_facts(tmp_path):
    card = make_card(tmp_path / "export.pkl", EXPORT_JSON, ["cat", "dog"], (32, 32), arch="Sequential")
    assert (card.file, card.vocab, card.arch, card.image_size) == \
        ("export.pkl", ("cat", "dog"), "resnet18", (224, 224))
    assert (card.sha256, card.created_at) == (EXPORT_JSON["sha256"], EXPORT_JSON["created_at"])
    assert (card.threshold, card.threshold_method, card.train_images) == (0.62, "conformal", 120)
    assert card.recall == {"cat": 0.8, "dog": 1.0} and card.has_export_json
    with pytest.raises(AttributeError):
        card.threshold = 0.5  # frozen


def test_a_notebook_export_has_a_card_of_what_the_model_tells(notebook_export):
    learner, card = load_learner_card(notebook_export)
    assert card.vocab == ("blue", "green", "red") and card.image_size == (32, 32)
    assert card.sha256 == sha256_file(notebook_export) and card.created_at[:2] == "20"
    assert card.arch == learner.arch.__name__ and not card.has_export_json
    assert (card.metrics, card.recall, card.threshold, card.threshold_method,
            card.train_images) == ({}, {}, None, None, None)


def test_load_model_reads_the_threshold_and_checks_the_checksum(notebook_export, tmp_path):
    model = tmp_path / "export.pkl"
    shutil.copy(notebook_export, model)
    (tmp_path / "export.json").write_text(json.dumps({"unsure": {"threshold": 0.5}}))
    predictor, card = load_model(model, runtime="torch")
    assert (predictor.runtime, card.threshold, card.vocab) == ("torch", 0.5, tuple(predictor.vocab))
    (tmp_path / "export.json").write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(ModelLoadError, match="does not match"):
        load_model(model)
    (tmp_path / "export.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="is not valid JSON"):
        load_model(model)
