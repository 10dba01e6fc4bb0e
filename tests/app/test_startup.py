"""Start-up: a model that cannot be served stops create_app (and gunicorn) with one clear line."""
from __future__ import annotations

import json
import pickle
import shutil

import pytest

from app import ModelLoadError, create_app
from app.config import ENV_NAMES
from app.setting_parsers import ConfigError
from classifier.model_files import sha256_file
from harness.servers import run_to_exit


def start(path, **config):
    settings = {name: "" for name in ENV_NAMES}
    settings.update(MODEL_PATH=str(path), **config)
    return create_app(settings)


def one_line(exc) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_missing_model(tmp_path):
    with pytest.raises(ModelLoadError) as exc:
        start(tmp_path / "nope" / "export.pkl")
    assert "not found" in one_line(exc)


def test_corrupt_model(tmp_path, notebook_export):
    bad = tmp_path / "export.pkl"
    bad.write_bytes(notebook_export.read_bytes()[:5000])  # truncated download
    with pytest.raises(ModelLoadError) as exc:
        start(bad)
    assert "not a loadable fastai export" in one_line(exc)


def test_pickle_that_is_not_a_learner(tmp_path):
    path = tmp_path / "export.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ModelLoadError) as exc:
        start(path)
    assert "not a fastai Learner" in one_line(exc) or "not a loadable" in one_line(exc)


def test_sha256_mismatch(tmp_path, notebook_export):
    path = tmp_path / "export.pkl"
    shutil.copy(notebook_export, path)
    (tmp_path / "export.json").write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(ModelLoadError) as exc:
        start(path)
    assert "does not match" in one_line(exc)
    # With the right checksum the same file serves.
    (tmp_path / "export.json").write_text(json.dumps({"sha256": sha256_file(path)}))
    assert start(path).test_client().get("/readyz").status_code == 200


def test_bad_setting(notebook_export):
    with pytest.raises(ConfigError) as exc:
        start(notebook_export, MAX_BATCH="lots")
    assert "MAX_BATCH" in one_line(exc)


@pytest.mark.e2e
def test_gunicorn_exits_1_with_one_line_on_a_bad_setting(model_dir):
    """The README's command (gunicorn.conf.py loads the settings) with a bad value."""
    code, output = run_to_exit(model_dir / "export.pkl", env={"EXACT_DECODE": "maybe"},
                               timeout=90)
    assert code == 1, output
    assert output.strip().splitlines() == ["Error: EXACT_DECODE must be on or off, not 'maybe'."]


@pytest.mark.e2e
def test_gunicorn_exits_nonzero_with_one_clear_line(tmp_path):
    code, output = run_to_exit(tmp_path / "missing.pkl", timeout=90)
    assert code not in (None, 0)
    assert "Model file not found" in output
    assert "Traceback" not in output


def test_gunicorn_settings_are_used_and_warm_up_is_left_to_the_workers(model_dir):
    from app import serve_preloaded
    from app.config import app_settings, load_settings
    from app.model_service import model_service

    settings = load_settings(environ={"MODEL_PATH": str(model_dir / "export.pkl"),
                                     "MAX_BATCH": "3"})
    serve_preloaded(settings)  # as gunicorn.conf.py does in the master
    app = create_app()
    service = model_service(app)
    assert app_settings(app) is settings and not service.ready
    assert service.warm_up() and service.ready  # post_worker_init, in each worker
    # Only the one create_app() that gunicorn makes is affected.
    assert start(model_dir / "export.pkl").test_client().get("/readyz").status_code == 200
