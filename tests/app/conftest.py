"""Fixtures for the serving tests: a served model directory, apps built from it, clients."""
from __future__ import annotations

import hashlib
import json
import shutil
from collections import OrderedDict

import pytest
from flask import Flask

from app import create_app
from app.config import ENV_NAMES
from harness.images import encode, photo, shuffled_image_folder
from harness.servers import UNLIMITED_RATES
from tests.app.openapi_check import CheckedClient

EXAMPLE_COLOURS = {"red": (220, 30, 30), "blue": (30, 40, 220)}


@pytest.fixture(scope="session", autouse=True)
def each_network_exported_once():
    """Serving a notebook export exports its network to ONNX at load (0.35 s); the app tests
    make about 100 apps of a few models, which was a quarter of `make test-fast`. The session
    exports each network once, keyed by its class, input size and weights: the same export's
    bytes. A network that fails to export is not kept (its error comes each time)."""
    from classifier import onnx_compile

    export, graphs = onnx_compile.export_graph, {}

    def export_once(model, image_size):
        weights = hashlib.sha256()
        for tensor in model.state_dict().values():
            weights.update(tensor.detach().cpu().numpy().tobytes())
        key = (type(model).__qualname__, tuple(image_size), weights.hexdigest())
        if key not in graphs:
            graphs[key] = export(model, image_size)
        return graphs[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx_compile, "export_graph", export_once)
        yield


@pytest.fixture(scope="session", autouse=True)
def every_answer_checked():
    """Every app's test client checks each JSON answer against the app's OpenAPI document
    (tests/app/openapi_check.py): a test fails on an answer the document does not describe."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Flask, "test_client_class", CheckedClient)
        yield


@pytest.fixture(scope="session")
def model_dir(notebook_export, tmp_path_factory):
    """A notebook export (no export.json) with examples/<label>/<image> beside it."""
    folder = tmp_path_factory.mktemp("served")
    shutil.copy(notebook_export, folder / "export.pkl")
    for label, colour in EXAMPLE_COLOURS.items():
        (folder / "examples" / label).mkdir(parents=True)
        (folder / "examples" / label / f"{label}.png").write_bytes(
            encode(photo(seed=3, colour=colour)))
    return folder


KEPT_APPS = 4  # each app holds its models (150-250 MB): a session keeping all of them grew to 14 GB


@pytest.fixture(scope="session")
def app_for():
    """app_for(model_path, **config): create_app serving that model, config on top of a clean
    slate: the shell's env vars never leak in. The last KEPT_APPS apps are reused."""
    cache: OrderedDict = OrderedDict()

    def make(model_path, **config):
        settings = {name: "" for name in ENV_NAMES}
        settings.update(MODEL_PATH=str(model_path), TESTING=True)
        # Every test client is one address: tests of other things must not share the
        # per-client budgets (app/limits.py); tests/app/test_limits.py sets its own.
        settings.update(UNLIMITED_RATES)
        settings.update(config)
        key = tuple(sorted((k, str(v)) for k, v in settings.items()))
        if key not in cache:
            cache[key] = create_app(settings)
            while len(cache) > KEPT_APPS:
                cache.popitem(last=False)
        cache.move_to_end(key)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def make_app(app_for, model_dir):
    """make_app(**config): app_for the served model directory."""
    return lambda **config: app_for(model_dir / "export.pkl", **config)


@pytest.fixture(scope="session")
def app(make_app):
    return make_app()


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def referenced_model(trained_model, tmp_path_factory):
    """The session's model with its field reference (classifier/drift.py) recorded on 90 fresh
    in-distribution images by training's own function: its 9 validation images are too few for
    a steady drift score (docs/serving.md, field signals)."""
    from classifier.loader import load_model
    from training.evaluate import field_reference, probabilities

    folder = tmp_path_factory.mktemp("referenced") / "model"
    shutil.copytree(trained_model.parent, folder)
    predictor, card = load_model(folder / "export.pkl")
    paths = shuffled_image_folder(tmp_path_factory.mktemp("reference"), 30, seed=7)
    meta_path = folder / "export.json"
    meta = json.loads(meta_path.read_text())
    meta["field_reference"] = field_reference(predictor, paths,
                                              probabilities(predictor, paths), list(card.vocab))
    meta_path.write_text(json.dumps(meta))
    return folder / "export.pkl"
