"""The review queue (REVIEW_DIR, app/review_queue.py) and /review (app/review.py): what is
kept and how, its caps, the key and same-site guards, and filing into FEEDBACK_DIR."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from app.config import load_settings
from app.model_service import model_service
from app.review_metrics import DROPPED
from app.setting_parsers import ConfigError
from harness.images import encode, photo

KEY = "review-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def review_app(make_app, tmp_path):
    """make(**config): an app with a fresh REVIEW_DIR and FEEDBACK_DIR; every answer unsure
    unless the config says otherwise."""
    def make(**config):
        settings = dict(REVIEW_DIR=str(tmp_path / "review"), FEEDBACK_DIR=str(tmp_path / "fb"),
                        API_KEY=KEY, UNSURE_THRESHOLD="1", REVIEW_SAMPLE="0")
        settings.update(config)
        app = make_app(**settings)
        app.review_dir, app.feedback_dir = tmp_path / "review", tmp_path / "fb"
        return app
    return make


def classify(app, *seeds, **headers):
    client = app.test_client()
    for seed in seeds:
        r = client.post("/predict", data=encode(photo(seed=seed), "JPEG"),
                        content_type="image/jpeg", headers={**AUTH, **headers})
        assert r.status_code == 200, r.get_json()
    model_service(app).review.wait_idle()


def queued(app) -> list[dict]:
    folder = app.review_dir
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] \
        if folder.exists() else []


def test_review_dir_needs_feedback_dir_and_key(tmp_path):
    for missing in ("FEEDBACK_DIR", "API_KEY"):
        env = {"REVIEW_DIR": str(tmp_path), "FEEDBACK_DIR": str(tmp_path / "fb"), "API_KEY": "k"}
        del env[missing]
        with pytest.raises(ConfigError, match="REVIEW_DIR needs FEEDBACK_DIR"):
            load_settings(env)


def test_unsure_answer_is_queued_small_and_without_metadata(review_app):
    app = review_app()
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    big = photo(seed=5).resize((640, 480))
    buf = io.BytesIO()
    big.save(buf, "JPEG", exif=exif, comment=b"secret")
    r = app.test_client().post("/predict", data=buf.getvalue(), content_type="image/jpeg",
                               headers={**AUTH, "X-Request-ID": "req-7"})
    assert r.status_code == 200 and r.get_json()["unsure"]
    model_service(app).review.wait_idle()
    (record,) = queued(app)
    answer = r.get_json()
    assert record["reason"] == "unsure" and record["label"] == answer["label"]
    assert record["version"] == answer["version"] and record["request_id"] == "req-7"
    assert [c["label"] for c in record["top"]] == [c["label"] for c in answer["top"]] + \
        [c for c in answer["probabilities"] if c not in {t["label"] for t in answer["top"]}]
    side = max(model_service(app).model.predictor.image_size)
    with Image.open(app.review_dir / f"{record['id']}.jpg") as im:
        assert im.format == "JPEG" and min(im.size) == side and im.size[0] > im.size[1]
        assert dict(im.getexif()) == {} and "comment" not in im.info


def test_sure_answers_are_sampled(review_app):
    classify(review_app(UNSURE_THRESHOLD="0", REVIEW_SAMPLE="0"), 1, 2)
    app = review_app(UNSURE_THRESHOLD="0", REVIEW_SAMPLE="1")
    assert queued(app) == []
    classify(app, 1, 2)
    assert [r["reason"] for r in queued(app)] == ["sample", "sample"]


def test_caps_drop_new_items_and_never_fail_a_request(review_app):
    full = DROPPED.labels(reason="full")
    before = full._value.get()
    app = review_app(REVIEW_MAX_FILES="2")
    classify(app, 1, 2, 3, 4)
    assert len(queued(app)) == 2 and len(list(app.review_dir.glob("*.jpg"))) == 2
    assert full._value.get() == before + 2
    tiny = review_app(REVIEW_DIR=str(app.review_dir.parent / "tiny"), REVIEW_MAX_MB="0.001")
    tiny.review_dir = app.review_dir.parent / "tiny"
    classify(tiny, 5)
    assert queued(tiny) == [] and full._value.get() == before + 3


def test_review_needs_the_key(review_app):
    app = review_app()
    classify(app, 1)
    client = app.test_client()
    r = client.get("/review")
    assert r.status_code == 200 and b'name="key"' in r.data and b"review-image" not in r.data
    assert client.get("/review/items.json").status_code == 401
    (record,) = queued(app)
    assert client.get(f"/review/items/{record['id']}.jpg").status_code == 401
    r = client.post(f"/review/items/{record['id']}", data={"discard": "1"})
    assert r.status_code == 401 and len(queued(app)) == 1
    assert client.post("/review/login", data={"key": "wrong"}).status_code == 401
    client.set_cookie("review_session", "99999999999.forged", path="/review")
    assert client.get("/review/items.json").status_code == 401
    items = client.get("/review/items.json", headers=AUTH).get_json()
    assert [i["id"] for i in items["items"]] == [record["id"]] and items["remaining"] == 1


def test_sign_in_sets_a_strict_cookie_and_shows_the_queue(review_app):
    app = review_app()
    classify(app, 1)
    client = app.test_client()
    r = client.post("/review/login", data={"key": KEY})
    assert r.status_code == 303
    cookie = r.headers["Set-Cookie"]
    assert KEY not in cookie
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/review"):
        assert attribute in cookie
    page = client.get("/review")
    (record,) = queued(app)
    assert page.status_code == 200 and f"/review/items/{record['id']}.jpg".encode() in page.data
    assert client.get(f"/review/items/{record['id']}.jpg").mimetype == "image/jpeg"
    client.post("/review/logout")
    assert b'name="key"' in client.get("/review").data


def test_other_sites_cannot_post(review_app):
    app = review_app()
    classify(app, 1)
    (record,) = queued(app)
    client = app.test_client()
    cross = {"Sec-Fetch-Site": "cross-site"}
    assert client.post("/review/login", data={"key": KEY}, headers=cross).status_code == 403
    client.post("/review/login", data={"key": KEY})
    r = client.post(f"/review/items/{record['id']}", data={"label": "red"}, headers=cross)
    assert r.status_code == 403 and len(queued(app)) == 1
    assert not app.feedback_dir.exists()


def test_labelled_item_becomes_a_correction_and_leaves_the_queue(review_app):
    app = review_app()
    classify(app, 1, 2)
    first, second = queued(app)
    client = app.test_client()
    r = client.post(f"/review/items/{first['id']}", data={"label": "purple"}, headers=AUTH)
    assert r.status_code == 400 and len(queued(app)) == 2  # not a class: nothing moves
    r = client.post(f"/review/items/{first['id']}", data={"label": "green"}, headers=AUTH)
    assert r.status_code == 200, r.get_json()
    correction = r.get_json()["correction"]
    assert correction["label"] == "green" and correction["review"] == "unsure"
    assert correction["predicted"] == first["label"]
    assert (app.feedback_dir / "green" / f"{first['id']}.jpg").is_file()
    line = json.loads((app.feedback_dir / "feedback.jsonl").read_text().splitlines()[-1])
    assert line == correction
    assert [r["id"] for r in queued(app)] == [second["id"]]
    assert not (app.review_dir / f"{first['id']}.jpg").exists()
    again = client.post(f"/review/items/{first['id']}", data={"label": "green"}, headers=AUTH)
    assert again.status_code == 404 and again.get_json()["error"]["code"] == "review_item_gone"
    r = client.post(f"/review/items/{second['id']}", data={"discard": "1"}, headers=AUTH)
    assert r.get_json() == {"id": second["id"], "outcome": "discarded"}
    assert queued(app) == [] and list(app.review_dir.iterdir()) == []
    assert len(list(app.feedback_dir.rglob("*.jpg"))) == 1


def test_plain_forms_redirect_to_the_next_image(review_app):
    app = review_app()
    classify(app, 1)
    (record,) = queued(app)
    client = app.test_client()
    client.post("/review/login", data={"key": KEY})
    r = client.post(f"/review/items/{record['id']}", data={"label": "red"},
                    headers={"Accept": "text/html"})
    assert r.status_code == 303 and r.headers["Location"].endswith("/review")
    assert b"Nothing to review now" in client.get("/review").data


def test_an_empty_queue_before_its_first_item_is_an_empty_list(review_app):
    """REVIEW_DIR is made by the first queued image; asking before that answered 500."""
    app = review_app()
    assert not app.review_dir.exists()
    for page in ("/review/items.json", "/review"):
        assert app.test_client().get(page, headers=AUTH).status_code == 200
    assert app.test_client().get("/review/items.json", headers=AUTH).get_json()["items"] == []
