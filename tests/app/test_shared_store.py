"""Two real gunicorn servers on separate ports share one bucket (moto's S3 server, reached with
production's s3fs client): a correction sent to either is what `training.train --extra
s3://...` reads; a bucket that stops answering gives 503s with their code (no 500) and loses
no correction that was acknowledged; a bucket that cannot be reached stops start-up."""
from __future__ import annotations

import json

import pytest
import requests

from harness.images import encode, photo
from harness.object_store import S3Server
from harness.servers import GunicornServer, run_to_exit
from tests.conftest import run_training

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ENV = {"WEB_CONCURRENCY": 1, "THREADS": 2}


@pytest.fixture(scope="module")
def shared(model_dir):
    """(the S3 server, its URL for corrections, two servers writing there)."""
    with S3Server() as s3:
        env = {**ENV, "FEEDBACK_DIR": s3.url("feedback")}
        with GunicornServer(model_dir / "export.pkl", env=env) as one, \
                GunicornServer(model_dir / "export.pkl", env=env) as two:
            yield s3, s3.url("feedback"), (one, two)


def correct(server, seed: int, label: str = "red"):
    return requests.post(f"{server.url}/feedback?label={label}",
                         data=encode(photo(seed=seed)), headers={"Content-Type": "image/png"},
                         timeout=60)


def bucket_records(s3) -> list[dict]:
    client = s3.client()
    listed = client.list_objects_v2(Bucket=s3.bucket, Prefix="feedback/").get("Contents", [])
    return [json.loads(client.get_object(Bucket=s3.bucket, Key=o["Key"])["Body"].read())
            for o in listed if o["Key"].endswith(".jsonl")]


def test_a_correction_sent_to_one_server_is_read_by_training(shared, image_folder, tmp_path):
    s3, url, (one, two) = shared
    r = correct(two, seed=101, label="blue")
    assert r.status_code == 201, r.text
    result = run_training(image_folder, "--extra", url, "--no-pretrained", "--size", 32,
                          "--epochs", 1, "--bs", 8, "--no-augment", "--lr", "1e-2",
                          "--out", tmp_path / "models" / "export.pkl", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"+ 1 from {url}" in result.stdout, result.stdout
    assert "+ 0 from" not in result.stdout


def test_a_store_that_stops_answering_loses_no_acknowledged_correction(shared):
    s3, _, servers = shared
    acknowledged, refused = [], []
    for seed in range(200, 212):
        if seed == 206:
            s3.stop()
        r = correct(servers[seed % 2], seed)
        assert r.status_code in (201, 503), (r.status_code, r.text)
        (acknowledged if r.status_code == 201 else refused).append(r.json())
    assert len(acknowledged) == 6 and len(refused) == 6
    assert {e["error"]["code"] for e in refused} == {"feedback_unavailable"}
    s3.start()  # back: the servers write again without a restart
    assert correct(servers[0], seed=300).status_code == 201
    kept = {rec["request_id"]: rec for rec in bucket_records(s3)}
    assert all(kept.get(rec["request_id"]) == rec for rec in acknowledged)
    images = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="feedback/red/")["Contents"]
    assert {rec["image"] for rec in acknowledged} <= {o["Key"][len("feedback/"):] for o in images}
    assert all(server.alive() for server in servers)


def test_a_bucket_that_cannot_be_reached_stops_start_up(model_dir):
    with S3Server() as s3:
        code, output = run_to_exit(model_dir / "export.pkl", timeout=120, env={
            **ENV, "FEEDBACK_DIR": "s3://no-such-bucket/feedback",
            "AWS_ENDPOINT_URL_S3": s3.endpoint})
    assert code == 1 and "FEEDBACK_DIR cannot be used" in output and "no-such-bucket" in output
