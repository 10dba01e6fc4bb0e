"""The pooled features (classifier/drift.py's embedding): from torch and from the compiled
graph alike, absent but harmless in a graph compiled before them, and summarised by training
in export.json's field_reference."""
from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from classifier.drift import CONFIDENCE_EDGES, Reference
from classifier.loader import load_learner_card, load_model
from classifier.onnx_model import CompiledPredictor, read_compiled
from harness.images import photo


@pytest.fixture(scope="module")
def images():
    return [photo(seed=i, colour=c) for i, c in enumerate([(220, 30, 30), (30, 40, 220),
                                                            (30, 200, 40)])]


def test_torch_and_the_compiled_graph_give_the_same_features(trained_model, images):
    torch_predictor, _ = load_model(trained_model, runtime="torch")
    graph, meta = read_compiled(trained_model)
    compiled = CompiledPredictor(graph, meta)
    expected = torch_predictor.features(images)
    assert expected.shape == (3, 1024)  # resnet18's 512 channels, average and max pooled
    np.testing.assert_allclose(compiled.features(images), expected, rtol=1e-3, atol=1e-4)
    answers = compiled.predict_batch(images)
    np.testing.assert_allclose(np.stack([a.features for a in answers]), expected,
                               rtol=1e-3, atol=1e-4)


def test_a_graph_compiled_without_features_still_serves(trained_model, images):
    import torch

    learner, _ = load_learner_card(trained_model)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(learner.model.eval(), (torch.rand(2, 3, 32, 32),), buf, dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    graph, meta = read_compiled(trained_model)
    old, new = CompiledPredictor(buf.getvalue(), meta), CompiledPredictor(graph, meta)
    answers = old.predict_batch(images)
    assert [a.features for a in answers] == [None] * 3 and old.features(images) is None
    np.testing.assert_allclose(old.probabilities(images), new.probabilities(images), atol=1e-6)


def test_training_records_the_field_reference(trained_model):
    meta = json.loads(trained_model.with_suffix(".json").read_text())
    reference = meta["field_reference"]
    validation = meta["metrics"]["validation"]
    n = validation["n"]
    assert reference["images"] == n
    assert reference["confidence_edges"] == list(CONFIDENCE_EDGES)
    assert sum(reference["confidence_counts"]) == n
    predicted = np.asarray(validation["confusion_matrix"]).sum(axis=0)  # columns: predicted
    assert reference["class_counts"] == dict(zip(meta["vocab"], predicted.tolist()))
    embedding = reference["embedding"]
    assert embedding["dim"] == 1024 and 1 <= embedding["components"] <= n // 4
    unpacked = Reference(reference, meta["vocab"])
    mean, directions, variance = unpacked.embedding
    assert directions.shape == (embedding["components"], 1024)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1, atol=1e-2)  # float16
    assert list(variance) == sorted(variance, reverse=True)
    # the validation images' own features sit at the reference's centroid
    predictor, _ = load_model(trained_model, runtime="torch")
    examples = sorted((trained_model.parent / "examples").glob("*/*"))
    features = predictor.features([Image.open(p).convert("RGB") for p in examples])
    assert np.linalg.norm(features.mean(axis=0) - mean) < np.linalg.norm(mean)
