"""POST /feedback (FEEDBACK_DIR): corrections stored once by content under <label>/, one JSON
line each; off (404, its own code) without the setting; /predict's limits and formats."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from app.model_service import model_service
from classifier.image_files import IMAGE_EXTENSIONS
from harness.images import FORMATS, MIME, encode, photo

VOCAB = ["blue", "green", "red"]


@pytest.fixture(scope="module")
def feedback_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("feedback")


@pytest.fixture(scope="module")
def fb_app(make_app, feedback_dir):
    return make_app(FEEDBACK_DIR=str(feedback_dir), MAX_UPLOAD_MB="1")


def lines(folder):
    path = folder / "feedback.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_correction_is_stored_once_and_logged(fb_app, feedback_dir):
    client = fb_app.test_client()
    data = encode(photo(seed=11), "JPEG")
    before = len(lines(feedback_dir))
    predicted = client.post("/predict", data=data, content_type="image/jpeg").get_json()
    for _ in range(2):
        r = client.post("/feedback", data={"file": (io.BytesIO(data), "x.jpg"), "label": "green"},
                        headers={"X-Request-ID": "req-42"})
        assert r.status_code == 201, r.get_json()
    (stored,) = (feedback_dir / "green").iterdir()
    digest = hashlib.sha256(stored.read_bytes()).hexdigest()
    assert stored.name == f"{digest}.jpg"
    records = lines(feedback_dir)[before:]
    assert len(records) == 2
    record = records[0]
    assert record["label"] == "green" and record["image"] == f"green/{digest}.jpg"
    assert record["sha256"] == digest
    assert record["predicted"] == predicted["label"]
    assert record["confidence"] == pytest.approx(predicted["confidence"])
    assert record["model_sha256"] == model_service(fb_app).info["sha256"]
    assert record["request_id"] == "req-42"


def test_client_and_time_are_recorded(fb_app, feedback_dir):
    """Who sent it (the trusted address, or the API key's id) and when, beside each one."""
    png = encode(photo(seed=14), "PNG")
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    r = fb_app.test_client().post("/feedback?label=red", data=png, content_type="image/png",
                                  environ_base={"REMOTE_ADDR": "198.51.100.7"})
    record = lines(feedback_dir)[-1]
    assert r.get_json() == record
    assert record["client"] == "ip:198.51.100.7"
    when = dt.datetime.fromisoformat(record["time"])
    assert when.tzinfo is not None and started <= when <= dt.datetime.now(dt.UTC)


def test_key_holders_are_recorded_by_key_id(make_app, tmp_path):
    folder = tmp_path / "fb"
    client = make_app(FEEDBACK_DIR=str(folder), API_KEY="s3cret").test_client()
    r = client.post("/feedback?label=red", data=encode(photo()), content_type="image/png",
                    headers={"X-API-Key": "s3cret"})
    assert r.status_code == 201, r.get_json()
    client_id = lines(folder)[-1]["client"]
    assert client_id == "key:" + hashlib.sha256(b"s3cret").hexdigest()[:12]
    assert "s3cret" not in (folder / "feedback.jsonl").read_text()


def test_stored_pixels_carry_no_metadata(fb_app, feedback_dir):
    """A phone photo's EXIF (GPS included), XMP and comment never reach the disk; its
    orientation is applied to the pixels instead."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the stored pixels come out upright
    gps = exif.get_ifd(0x8825)
    gps[2], gps[4] = (52.0, 22.0, 1.0), (4.0, 53.0, 2.0)  # latitude, longitude
    original = encode(photo(seed=15, size=(64, 48)), "JPEG", exif=exif.tobytes(),
                      comment=b"taken at home", xmp=b"<x:xmpmeta>secret</x:xmpmeta>")
    with Image.open(io.BytesIO(original)) as im:
        assert im.getexif().get_ifd(0x8825) and "xmp" in im.info
    r = fb_app.test_client().post("/feedback?label=blue", data=original,
                                  content_type="image/jpeg")
    assert r.status_code == 201, r.get_json()
    stored = (feedback_dir / r.get_json()["image"]).read_bytes()
    with Image.open(io.BytesIO(stored)) as im:
        assert im.format == "JPEG" and im.size == (48, 64)
        assert not im.getexif() and not {"exif", "xmp", "comment", "icc_profile"} & set(im.info)
    assert b"home" not in stored and b"secret" not in stored


def test_same_formats_as_predict(fb_app, feedback_dir):
    client = fb_app.test_client()
    png = encode(photo(seed=12), "PNG")
    r = client.post("/feedback?label=red", data=png, content_type="image/png")
    assert r.status_code == 201 and r.get_json()["image"].endswith(".jpg")
    r = client.post("/feedback?label=blue", json={"image": base64.b64encode(png).decode()})
    assert r.status_code == 201 and r.get_json()["image"].startswith("blue/")
    # The result page's own copy, as a data: URL in a form field, then back to the page.
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    r = client.post("/feedback?from_page=1", data={"image": url, "label": "red"},
                    content_type="multipart/form-data")
    assert r.status_code == 303 and r.headers["Location"].endswith("/?feedback=saved")
    assert "correction was saved" in client.get("/?feedback=saved").get_data(as_text=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_is_kept_under_a_suffix_training_reads(fb_app, feedback_dir, fmt):
    """A HEIC correction must not be stored as something --extra skips."""
    data = encode(photo(seed=13), fmt)
    r = fb_app.test_client().post("/feedback?label=red", data=data, content_type=MIME[fmt])
    assert r.status_code == 201, r.get_json()
    assert Path(r.get_json()["image"]).suffix in IMAGE_EXTENSIONS


@pytest.mark.parametrize("kwargs, status, code", [
    ({"data": {"file": (io.BytesIO(b"x"), "a.png"), "label": "purple"}}, 400, "invalid_label"),
    ({"data": {"file": (io.BytesIO(b"x"), "a.png")}}, 400, "invalid_label"),
    ({"data": {"label": "red"}, "content_type": "multipart/form-data"}, 400, "missing_file"),
    ({"data": {"file": (io.BytesIO(b"not an image"), "a.png"), "label": "red"}}, 400,
     "invalid_image"),
    ({"data": {"file": (io.BytesIO(bytes(2 * 2**20)), "a.png"), "label": "red"}}, 413,
     "payload_too_large"),
    ({"data": {"image": "data:image/png;base64,@@@", "label": "red"},
      "content_type": "multipart/form-data"}, 400, "invalid_base64"),
    ({"data": b"<x/>", "content_type": "application/xml", "query_string": {"label": "red"}},
     415, "unsupported_media_type"),
    ({"data": {"file": (io.BytesIO(encode(photo())), "a.png"), "label": "red", "note": "x"}},
     400, "invalid_field"),
])
def test_bad_corrections_store_nothing(fb_app, feedback_dir, kwargs, status, code):
    before = (len(lines(feedback_dir)), sorted(p.name for p in feedback_dir.rglob("*")))
    r = fb_app.test_client().post("/feedback", **kwargs)
    assert (r.status_code, r.get_json()["error"]["code"]) == (status, code)
    assert (len(lines(feedback_dir)), sorted(p.name for p in feedback_dir.rglob("*"))) == before


def test_off_without_the_setting(client):
    r = client.post("/feedback", data={"file": (io.BytesIO(encode(photo())), "a.png"),
                                       "label": "red"})
    assert (r.status_code, r.get_json()["error"]["code"]) == (404, "feedback_disabled")
    assert "FEEDBACK_DIR" in r.get_json()["error"]["message"]
    assert b"feedback-form" not in client.get("/").data


def test_result_page_offers_every_class(fb_app):
    page = fb_app.test_client().post(
        "/", data={"file": (io.BytesIO(encode(photo())), "a.png")}).get_data(as_text=True)
    assert "Wrong? The right answer is" in page
    for label in VOCAB:
        assert f"<option>{label}</option>" in page
    assert 'name="image" id="feedback-image" value="data:image/jpeg;base64,' in page


def test_api_key_guards_feedback_too(make_app, feedback_dir):
    client = make_app(FEEDBACK_DIR=str(feedback_dir), API_KEY="s3cret").test_client()
    r = client.post("/feedback?label=red", data=encode(photo()), content_type="image/png")
    assert r.status_code == 401


def test_unwritable_folder_is_a_503_with_its_code(make_app, tmp_path):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("a file where the folder should be")
    client = make_app(FEEDBACK_DIR=str(blocked)).test_client()
    r = client.post("/feedback?label=red", data=encode(photo()), content_type="image/png")
    assert (r.status_code, r.get_json()["error"]["code"]) == (503, "feedback_unavailable")


def test_page_form_errors_come_back_as_the_page(fb_app):
    r = fb_app.test_client().post("/feedback?from_page=1", data={"image": "data:,x",
                                                                 "label": "purple"},
                                  content_type="multipart/form-data")
    assert r.status_code == 400 and r.mimetype == "text/html"
    assert b"(invalid_label)" in r.data
