"""classifier/storage.py: one code path for a local folder and a bucket (moto's S3 server,
reached with the same s3fs client as production); unknown schemes refused; a store that stops
answering is a StoreUnavailable naming it, within seconds."""
from __future__ import annotations

import time

import pytest

from app.config import load_settings
from app.setting_parsers import ConfigError
from classifier import storage
from classifier.storage import Store, StoreUnavailable
from harness.object_store import S3Server


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        yield server


@pytest.mark.parametrize("location", ["gs://bucket/x", "s3:/bucket/x", "s3:bucket", "s3://",
                                      "https://example.com/x"])
def test_unknown_or_broken_locations_are_refused(location):
    with pytest.raises(ValueError):
        Store(location)
    with pytest.raises(ConfigError, match="FEEDBACK_DIR"):
        load_settings({"FEEDBACK_DIR": location})


@pytest.mark.parametrize("name", ["MODEL_PATH", "REVIEW_DIR"])
def test_a_bucket_where_only_a_local_path_works_is_refused(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a folder named "s3:" used to appear
    with pytest.raises(ConfigError, match=f"{name} must be a local path.*MODELS_URL"):
        load_settings({name: "s3://bucket/x"})
    assert not (tmp_path / "s3:").exists()


def test_a_bucket_url_stays_a_url_and_a_path_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings({"FEEDBACK_DIR": "s3://bucket/fb"}).feedback_dir == "s3://bucket/fb"
    assert load_settings({"FEEDBACK_DIR": "fb"}).feedback_dir == str(tmp_path / "fb")
    assert not (tmp_path / "s3:").exists()


@pytest.mark.parametrize("kind", ["local", "bucket"])
def test_one_api_for_a_folder_and_a_bucket(kind, s3, tmp_path):
    store = Store(tmp_path / "store" if kind == "local" else s3.url(f"api-{time.time_ns()}"))
    assert store.files() == {}
    store.check()
    store.write_bytes("red/a.jpg", b"abc")
    store.write_bytes("red/a.jpg", b"abcd")  # replaced whole
    assert store.read_bytes("red/a.jpg") == b"abcd" and store.exists("red/a.jpg")
    first = store.append_line("feedback.jsonl", b'{"n": 1}\n')
    second = store.append_line("feedback.jsonl", b'{"n": 2}\n')
    files = store.files()
    assert files["red/a.jpg"] == 4 and not any(".reachable" in n for n in files)
    if kind == "local":  # one log, appended to
        assert first == second == "feedback.jsonl"
        assert store.read_bytes("feedback.jsonl") == b'{"n": 1}\n{"n": 2}\n'
    else:  # a bucket cannot append: one object per line, beside the log's name
        assert first != second and first.startswith("feedback-") and first.endswith(".jsonl")
        assert store.read_bytes(first) + store.read_bytes(second) == b'{"n": 1}\n{"n": 2}\n'
    assert sorted(files) == sorted({"red/a.jpg", first, second})
    copy = storage.local_copy(store.url)
    assert (copy / "red" / "a.jpg").read_bytes() == b"abcd"
    with pytest.raises(FileNotFoundError):
        store.read_bytes("red/missing.jpg")


def test_a_missing_bucket_fails_the_check_with_its_name(s3):
    with pytest.raises(StoreUnavailable, match="no-such-bucket"):
        Store("s3://no-such-bucket/fb").check()


def test_a_store_that_stops_answering_says_so_within_seconds():
    with S3Server() as server:
        store = Store(server.url("fb"))
        store.write_bytes("a.txt", b"x")
        server.stop()
        for call in (lambda: store.write_bytes("b.txt", b"y"), store.files, store.check,
                     lambda: store.read_bytes("a.txt")):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=server.url("fb")):
                call()
            assert time.monotonic() - started < 10
        server.start()  # back on the same port, with what it held
        assert store.read_bytes("a.txt") == b"x"


def test_the_check_command_says_whether_the_store_takes_writes(s3, capsys, tmp_path):
    assert storage.main(["check", s3.url("cli")]) == 0
    assert storage.main(["check", "s3://no-such-bucket/x"]) == 1
    assert "no-such-bucket" in capsys.readouterr().err
    assert storage.main(["check", "gs://bucket/x"]) == 2
