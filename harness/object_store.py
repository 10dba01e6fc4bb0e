"""A local S3-compatible server for tests: moto's server mode on a free loopback port.

    with S3Server() as s3:
        GunicornServer(model, env={**s3.env, "FEEDBACK_DIR": s3.url("feedback")})

The servers and CLIs under test reach it with the same s3fs client code as production; only
the standard variables differ (AWS_ENDPOINT_URL_S3 points here, the keys are moto's dummies).
`stop()` makes the store stop answering, `start()` brings it back on the same port with what
it held (moto keeps its buckets in this process).
"""
from __future__ import annotations

import os

from harness.servers import free_port

BUCKET = "classifier-test"


class S3Server:
    def __init__(self, bucket: str = BUCKET):
        self.bucket = bucket
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": self.endpoint}
        self._server = None

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def start(self) -> S3Server:
        from moto.server import ThreadedMotoServer
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def __enter__(self) -> S3Server:
        self.start()
        self.client().create_bucket(Bucket=self.bucket)
        self._saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)  # this process's own Store() and CLIs reach it too
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
