"""POST /predict: every input shape and format the contract accepts, and what it answers."""
from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from app.model_service import model_service
from classifier.images import open_checked
from harness.images import FORMATS, animated_gif, encode, exif_rotated, mode_variants, photo


def check_prediction(body: dict, vocab: list[str]) -> None:
    assert list(body["probabilities"]) == vocab  # every class, in vocab order
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-5
    assert body["label"] == vocab[body["index"]]
    assert body["confidence"] == max(body["probabilities"].values())
    assert body["probabilities"][body["label"]] == body["confidence"]


@pytest.fixture(scope="module")
def vocab(app):
    return model_service(app).info["vocab"]


def test_multipart_single_file(client, vocab):
    r = client.post("/predict", data={"file": (io.BytesIO(encode(photo())), "a.png")})
    assert r.status_code == 200, r.get_json()
    assert r.mimetype == "application/json"
    check_prediction(r.get_json(), vocab)


def test_raw_body_matches_multipart(client, vocab):
    data = encode(photo(seed=5), "JPEG")
    raw = client.post("/predict", data=data, content_type="image/jpeg")
    form = client.post("/predict", data={"file": (io.BytesIO(data), "x.jpg")})
    assert raw.status_code == form.status_code == 200
    check_prediction(raw.get_json(), vocab)
    assert raw.get_json() == form.get_json()


def test_a_large_file_part_is_held_in_memory_not_spooled_to_disk(client, app, monkeypatch):
    """werkzeug spools a file part over 500 KB to a temporary file; ours stays in memory and
    is handed over without a copy (app/uploads.py): the same bytes reach the decoder."""
    from werkzeug import formparser

    monkeypatch.setattr(formparser, "SpooledTemporaryFile",
                        lambda *a, **k: pytest.fail("an upload was spooled to disk"))
    big = Image.effect_noise((1200, 900), 64).convert("RGB")
    data = encode(big, "PNG")
    assert len(data) > 2**20
    seen = []
    monkeypatch.setattr("app.model_service.open_checked",
                        lambda raw, *a, **k: seen.append(raw) or open_checked(raw, *a, **k))
    r = client.post("/predict", data={"file": (io.BytesIO(data), "big.png")})
    assert r.status_code == 200, r.get_json()
    assert seen == [data]


class ShortReads(io.BytesIO):
    """A request body that, like a socket on a slow link, gives at most 1000 bytes a read."""

    def read(self, size=-1):
        return super().read(1000 if size is None or size < 0 else min(size, 1000))

    def readinto(self, buffer):
        return super().readinto(memoryview(buffer)[:1000])


@pytest.mark.parametrize("shape", ["raw", "json"])
def test_a_body_arriving_in_short_reads_is_read_to_its_end(client, shape):
    data = encode(photo(size=(320, 240), seed=5), "JPEG")
    body = data if shape == "raw" else json.dumps({"image": base64.b64encode(data).decode()}).encode()
    whole = client.post("/predict", data=body,
                        content_type="image/jpeg" if shape == "raw" else "application/json")
    short = client.post("/predict", input_stream=ShortReads(body), content_length=len(body),
                        content_type="image/jpeg" if shape == "raw" else "application/json")
    assert short.status_code == whole.status_code == 200, short.get_json()
    assert short.get_json() == whole.get_json()


def test_lying_image_content_type_is_sniffed(client):
    # A PNG sent as image/jpeg is still decoded by its content.
    r = client.post("/predict", data=encode(photo()), content_type="image/jpeg")
    assert r.status_code == 200


def test_several_files_are_one_batch_in_order(client, app, vocab, monkeypatch):
    images = [encode(photo(seed=i, colour=c))
              for i, c in enumerate([(220, 30, 30), (30, 200, 40), (30, 40, 220)])]
    predictor = model_service(app).predictor
    batches = []
    original = predictor.predict_prepared
    monkeypatch.setattr(predictor, "predict_prepared",
                        lambda items: batches.append(len(items)) or original(items))
    r = client.post("/predict", data={"file": [(io.BytesIO(b), f"img{i}.png")
                                               for i, b in enumerate(images)]})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert [p["filename"] for p in body["predictions"]] == ["img0.png", "img1.png", "img2.png"]
    assert batches == [3]
    for item, data in zip(body["predictions"], images):
        check_prediction(item, vocab)
        single = client.post("/predict", data=data, content_type="image/png").get_json()
        assert single["label"] == item["label"]
        for label in vocab:
            assert abs(single["probabilities"][label] - item["probabilities"][label]) < 1e-5


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format(client, vocab, fmt):
    r = client.post("/predict", data={"file": (io.BytesIO(encode(photo(), fmt)), f"x.{fmt}")})
    assert r.status_code == 200, r.get_json()
    check_prediction(r.get_json(), vocab)


@pytest.mark.parametrize("name", sorted(mode_variants()))
def test_every_mode_is_normalised(client, vocab, name):
    data = mode_variants()[name]
    assert open_checked(data).mode == "RGB"
    r = client.post("/predict", data={"file": (io.BytesIO(data), name)})
    assert r.status_code == 200, r.get_json()
    check_prediction(r.get_json(), vocab)


def test_exif_orientation_is_applied(client, app):
    data, upright = exif_rotated()
    seen = open_checked(data)
    assert seen.size == upright.size  # rotated back to 64x48, not left at 48x64
    predictor = model_service(app).predictor
    expected = predictor.predict(seen)
    r = client.post("/predict", data=data, content_type="image/jpeg")
    assert r.get_json()["label"] == expected.label
    assert abs(r.get_json()["confidence"] - expected.confidence) < 1e-6


def test_animated_gif_uses_first_frame(client, app):
    data = animated_gif()
    first = Image.open(io.BytesIO(data)).convert("RGB")
    predictor = model_service(app).predictor
    r = client.post("/predict", data=data, content_type="image/gif")
    assert r.status_code == 200
    assert abs(r.get_json()["confidence"] - predictor.predict(first).confidence) < 1e-6


def test_tiny_and_thin_images(client, vocab):
    for size in [(1, 1), (1, 2000), (3000, 2)]:
        r = client.post("/predict", data=encode(Image.new("RGB", size, (200, 10, 10))),
                        content_type="image/png")
        assert r.status_code == 200, (size, r.get_json())
        check_prediction(r.get_json(), vocab)
