"""What keeps corrections from being abused or lost: a quota in bytes and files, browsers'
posts only from this site's page, and no start-up sweep that can reach FEEDBACK_DIR."""
from __future__ import annotations

import os
import runpy

import pytest

from app import serve_preloaded
from app.config import ROOT
from harness.images import encode, photo
from harness.servers import run_to_exit


def post(client, seed=0, **kwargs):
    return client.post("/feedback?label=red", data=encode(photo(seed=seed), "PNG"),
                       content_type="image/png", **kwargs)


def stored(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_file_quota(make_app, tmp_path):
    client = make_app(FEEDBACK_DIR=str(tmp_path), FEEDBACK_MAX_FILES="2").test_client()
    assert [post(client, seed).status_code for seed in (1, 2)] == [201, 201]
    before = stored(tmp_path)
    r = post(client, seed=3)
    assert (r.status_code, r.get_json()["error"]["code"]) == (507, "feedback_full")
    assert "2 images" in r.get_json()["error"]["message"]
    assert stored(tmp_path) == before
    assert post(client, seed=1).status_code == 201  # one already kept takes no new file


def test_byte_quota(make_app, tmp_path):
    client = make_app(FEEDBACK_DIR=str(tmp_path), FEEDBACK_MAX_MB="0.01").test_client()
    assert post(client, seed=1).status_code == 201  # about 3 KB
    (tmp_path / "red" / "filler.bin").write_bytes(bytes(8 * 1024))  # 10 KB in all now
    r = post(client, seed=2)
    assert (r.status_code, r.get_json()["error"]["code"]) == (507, "feedback_full")
    assert "0.01 MB" in r.get_json()["error"]["message"]
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
    {"Sec-Fetch-Site": "same-site", "Origin": "https://other.localhost"},
    {"Origin": "https://evil.example"},  # an older browser: Origin only
    {"Origin": "null"},                  # a sandboxed frame
], ids=["cross-site", "same-site", "origin", "null-origin"])
def test_cross_site_posts_are_refused(make_app, tmp_path, headers):
    client = make_app(FEEDBACK_DIR=str(tmp_path)).test_client()
    r = post(client, headers=headers)
    assert (r.status_code, r.get_json()["error"]["code"]) == (403, "cross_site_request")
    r = client.post("/feedback?from_page=1", headers=headers, content_type="multipart/form-data",
                    data={"image": "data:image/png;base64,", "label": "red"})
    assert r.status_code == 403 and b"(cross_site_request)" in r.data
    assert stored(tmp_path) == []


@pytest.mark.parametrize("headers", [
    {},                                                       # curl, scripts
    {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"},  # the page's own
    {"Origin": "http://localhost"},
    {"Sec-Fetch-Site": "none"},                               # typed by the user
], ids=["no-browser", "same-origin", "origin", "user"])
def test_same_site_and_api_posts_are_taken(make_app, tmp_path, headers):
    client = make_app(FEEDBACK_DIR=str(tmp_path)).test_client()
    assert post(client, headers=headers).status_code == 201


def test_key_holders_are_not_asked_where_they_post_from(make_app, tmp_path):
    client = make_app(FEEDBACK_DIR=str(tmp_path), API_KEY="s3cret").test_client()
    r = post(client, headers={"Sec-Fetch-Site": "cross-site", "X-API-Key": "s3cret"})
    assert r.status_code == 201


def gunicorn_conf(monkeypatch, **env) -> dict:
    """gunicorn.conf.py's namespace under `env` (SystemExit if it refuses to start)."""
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    try:
        return runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    finally:
        serve_preloaded(None)  # this process is no gunicorn master


def test_start_up_sweep_deletes_only_prometheus_files(monkeypatch, tmp_path):
    keep = ["notes.txt", "other.db", "counter_12.db.bak", "corrections/red/a.jpg",
            "corrections/feedback.jsonl", "counter_3.db/inside"]
    for name in keep + ["counter_12.db", "histogram_7.db", "gauge_livesum_7.db"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    conf = gunicorn_conf(monkeypatch, PROMETHEUS_MULTIPROC_DIR=tmp_path)
    conf["on_starting"](None)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                  if p.is_file()) == sorted(keep)


@pytest.mark.parametrize("inside", ["", "feedback"], ids=["same", "inside"])
def test_feedback_dir_overlapping_the_metrics_dir_refuses_to_start(monkeypatch, tmp_path,
                                                                     inside):
    with pytest.raises(SystemExit, match="overlap"):
        gunicorn_conf(monkeypatch, PROMETHEUS_MULTIPROC_DIR=tmp_path,
                      FEEDBACK_DIR=tmp_path / inside)
    with pytest.raises(SystemExit, match="overlap"):  # the other way round
        gunicorn_conf(monkeypatch, PROMETHEUS_MULTIPROC_DIR=tmp_path / "m" / inside,
                      FEEDBACK_DIR=tmp_path / "m")


@pytest.mark.e2e
def test_gunicorn_exits_1_rather_than_sweep_the_corrections(model_dir, tmp_path):
    (tmp_path / "red").mkdir()
    (tmp_path / "red" / "kept.jpg").write_bytes(b"a correction")
    code, output = run_to_exit(model_dir / "export.pkl", timeout=60, env={
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "FEEDBACK_DIR": str(tmp_path)})
    assert code == 1 and "overlap" in output
    assert (tmp_path / "red" / "kept.jpg").read_bytes() == b"a correction"
    assert os.listdir(tmp_path) == ["red"]
