"""FEEDBACK_DIR=s3://BUCKET/PREFIX (moto's S3 server): corrections land in the bucket, under its
quota; a bucket that stops answering is a 503 `feedback_unavailable`, never a 500."""
from __future__ import annotations

import json

import pytest

from harness.images import encode, photo
from harness.object_store import S3Server


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        yield server


def objects(s3, prefix):
    listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=prefix + "/")
    return {o["Key"][len(prefix) + 1:] for o in listed.get("Contents", [])}


def send(app, seed=0, label="red"):
    return app.test_client().post(f"/feedback?label={label}", data=encode(photo(seed=seed)),
                                  content_type="image/png")


def test_a_correction_lands_in_the_bucket(make_app, s3):
    r = send(make_app(FEEDBACK_DIR=s3.url("fb-lands")))
    assert r.status_code == 201, r.get_json()
    record = r.get_json()
    stored = objects(s3, "fb-lands")
    (log,) = [name for name in stored if name.endswith(".jsonl")]
    assert stored == {record["image"], log}
    body = s3.client().get_object(Bucket=s3.bucket, Key=f"fb-lands/{log}")["Body"].read()
    assert json.loads(body) == record


def test_the_quota_counts_what_the_bucket_holds(make_app, s3):
    app = make_app(FEEDBACK_DIR=s3.url("fb-quota"), FEEDBACK_MAX_FILES="1")
    assert send(app, seed=1).status_code == 201
    assert send(app, seed=1).status_code == 201  # the same image: stored once
    r = send(app, seed=2)
    assert (r.status_code, r.get_json()["error"]["code"]) == (507, "feedback_full")


def test_a_bucket_that_stops_answering_is_a_503(make_app):
    with S3Server() as server:
        app = make_app(FEEDBACK_DIR=server.url("fb"))
        server.stop()
        r = send(app)
        assert (r.status_code, r.get_json()["error"]["code"]) == (503, "feedback_unavailable")
