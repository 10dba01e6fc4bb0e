"""Following models/live.json in one process (app/model_follow.py): a moved pointer swaps the
served model, answers and /model name the version, a tampered version is refused while the old
one keeps serving. The same against the real gunicorn server under load: test_model_swap_load.py."""
from __future__ import annotations

import pytest

from app import create_app
from app.config import ENV_NAMES
from app.model_follow import PointerFollower
from app.model_service import model_service
from app.uploads import Upload
from classifier.versions import move_pointer
from harness.images import encode, photo
from harness.versions import make_version

V1, V2, V3 = "20261205-090000-aaaaaa", "20261205-091000-bbbbbb", "20261205-092000-cccccc"


@pytest.fixture(scope="module")
def versions(notebook_export, tmp_path_factory):
    """models/ with versions V1 (live) and V2, V3 copied from one notebook export."""
    root = tmp_path_factory.mktemp("models")
    for name in (V1, V2, V3):
        make_version(root, notebook_export, name)
    move_pointer(root, V1, "promote")
    return root


@pytest.fixture(scope="module")
def app(versions):
    settings = {name: "" for name in ENV_NAMES}
    settings.update(MODEL_PATH=str(versions / "export.pkl"), TESTING=True)
    return create_app(settings)


def version_answered(client) -> str:
    r = client.post("/predict", data=encode(photo()), content_type="image/png")
    assert r.status_code == 200, r.get_json()
    return r.get_json()["version"]


def metric_value(client, name: str, **labels) -> float:
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_moved_pointer_is_followed_and_answers_name_the_version(app, versions):
    client, service = app.test_client(), model_service(app)
    follower = PointerFollower(service, interval=1)
    assert version_answered(client) == V1 and client.get("/model").get_json()["version"] == V1
    assert follower.follow() is False  # nothing moved

    move_pointer(versions, V2, "promote")
    assert follower.follow() is True
    assert version_answered(client) == V2
    info = client.get("/model").get_json()
    assert info["version"] == V2 and info["refused"] is None
    assert metric_value(client, "classifier_model_version_info", version=V2) == 1
    assert metric_value(client, "classifier_model_version_info", version=V1) == 0
    assert metric_value(client, "classifier_predictions_total", version=V2) >= 1

    move_pointer(versions, V1, "rollback")
    assert follower.follow() is True and version_answered(client) == V1


def test_a_request_finishes_on_the_model_it_started_with(app, versions):
    service = model_service(app)
    assert service.model.version == V1

    def swap_meanwhile(_image):  # runs between the request's decode and its prediction
        move_pointer(versions, V2, "promote")
        assert PointerFollower(service, interval=1).follow() is True

    (result,) = service.classify([Upload("a.png", encode(photo()))], on_image=swap_meanwhile)
    assert result.version == V1 and service.model.version == V2  # started on V1, ended on V1
    move_pointer(versions, V1, "rollback")
    PointerFollower(service, interval=1).follow()


def test_a_version_whose_file_does_not_match_its_sha256_is_refused(app, versions, caplog):
    client, service = app.test_client(), model_service(app)
    assert service.model.version == V1
    with open(versions / "versions" / V3 / "export.pkl", "ab") as fh:
        fh.write(b"tampered")
    refused_before = metric_value(client, "classifier_model_versions_refused_total", version=V3)
    move_pointer(versions, V3, "promote", forced=True)
    assert PointerFollower(service, interval=1).follow() is False
    assert version_answered(client) == V1  # the old one keeps serving
    refused = client.get("/model").get_json()["refused"]
    assert refused["version"] == V3 and "does not match export.json" in refused["reason"]
    assert f"version {V3} refused, still serving {V1}" in caplog.text
    assert metric_value(client, "classifier_model_versions_refused_total",
                        version=V3) == refused_before + 1
    move_pointer(versions, V1, "rollback")
