"""BODY_BUDGET_MB: a worker holds at most that many bytes of request bodies, reserved before
they are read (app/body_budget.py); past it 503 `busy` with Retry-After, never more memory."""
from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.body_budget import BodyBudget, BudgetedInput
from app.config import load_settings
from app.errors import ApiError
from app.machine import MB, body_budget, default_max_upload
from classifier.images import DEFAULT_MAX_IMAGE_PIXELS
from harness.images import encode, photo

KB = 1024


class HeldBody(io.BytesIO):
    """A request body whose reads wait until `release` is set."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.reading, self.release = threading.Event(), threading.Event()

    def read(self, size=-1):
        self.reading.set()
        self.release.wait(10)
        return super().read(size)

    def readinto(self, buffer):  # werkzeug's own stream reads this way
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def padded_photo(size: int) -> bytes:
    """A JPEG of `size` bytes (zeros after its end, which decoders ignore)."""
    jpeg = encode(photo(seed=1), "JPEG")
    return jpeg + bytes(size - len(jpeg))


def post(client, body, length: int, mimetype: str = "image/jpeg"):
    return client.post("/predict", input_stream=body, content_type=mimetype,
                       headers={"Content-Length": str(length)})


def test_an_upload_past_the_budget_is_told_busy_while_another_is_held(make_app):
    app = make_app(BODY_BUDGET_MB="1", MAX_UPLOAD_MB="1")
    data = padded_photo(600 * KB)
    held = HeldBody(data)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, app.test_client(), held, len(data))
        assert held.reading.wait(10), first.result().get_data()  # 600 KB reserved: 424 KB left
        refused = post(app.test_client(), io.BytesIO(data), len(data))
        small = post(app.test_client(), io.BytesIO(data[:100 * KB]), 100 * KB)
        held.release.set()
        assert first.result(10).status_code == 200
    assert refused.status_code == 503, refused.get_data(as_text=True)
    assert refused.json["error"]["code"] == "busy"
    assert int(refused.headers["Retry-After"]) >= 1
    assert small.status_code != 503  # what fits beside it is served
    # the first request's bytes were given back when it ended
    assert post(app.test_client(), io.BytesIO(data), len(data)).status_code == 200


def test_a_body_that_could_never_fit_is_too_large_not_busy(make_app):
    client = make_app(BODY_BUDGET_MB="1", MAX_UPLOAD_MB="1").test_client()
    # 600 KB of JSON counts 2.1 times: 1.23 MB, over the whole budget
    body = b'{"image": "' + b"A" * (600 * KB) + b'"}'
    answer = post(client, io.BytesIO(body), len(body), "application/json")
    assert answer.status_code == 413, answer.get_data(as_text=True)
    assert "at most 1.0 MB of request bodies" in answer.json["error"]["message"]


def test_a_chunked_body_is_reserved_as_it_is_read():
    budget = BodyBudget(300 * KB)
    budget.reserve(100 * KB, 100 * KB)  # another request's
    body = BudgetedInput(io.BytesIO(bytes(1024 * KB)), budget, None, 1)
    assert len(body.read(150 * KB)) == 150 * KB
    assert budget.held == 250 * KB
    with pytest.raises(ApiError) as busy:
        body.read(100 * KB)
    assert busy.value.code == "busy" and busy.value.headers["Retry-After"]
    budget.release(100 * KB)  # the other request ends: the rest fits, until the whole does not
    assert len(body.read(100 * KB)) == 100 * KB
    with pytest.raises(ApiError) as too_large:
        body.read(100 * KB)
    assert too_large.value.code == "payload_too_large"


def test_the_budget_and_the_upload_limit_follow_the_machine(monkeypatch):
    model = 45 * MB
    lean = body_budget(512 * MB, "lean", 1, model, DEFAULT_MAX_IMAGE_PIXELS)
    # 512 less the idle server (155), the margin (24), the model (45) and a 40 MP decode (250)
    assert lean == 38 * MB
    assert body_budget(1024 * MB, "torch", 1, model, DEFAULT_MAX_IMAGE_PIXELS) == 185 * MB
    assert body_budget(512 * MB, "lean", 1, model, 20_000_000) == lean + 125 * MB
    assert body_budget(512 * MB, "torch", 1, model, DEFAULT_MAX_IMAGE_PIXELS) == 16 * MB  # floor
    assert (default_max_upload(lean), default_max_upload(185 * MB)) == (19, 40)

    monkeypatch.setattr("app.machine.memory_limit", lambda: 512 * MB)
    monkeypatch.setattr("app.machine.installed_image", lambda: "lean")
    monkeypatch.setattr("app.machine.cpu_count", lambda: 1)
    settings = load_settings(environ={})
    served = settings.model_path.stat().st_size if settings.model_path.exists() else 0
    assert settings.body_budget == body_budget(512 * MB, "lean", 1, served,
                                               DEFAULT_MAX_IMAGE_PIXELS)
    assert settings.max_upload_mb == default_max_upload(settings.body_budget)
    given = load_settings(environ={"BODY_BUDGET_MB": "100", "MAX_UPLOAD_MB": "30"})
    assert (given.body_budget_mb, given.max_upload_mb) == (100, 30)
