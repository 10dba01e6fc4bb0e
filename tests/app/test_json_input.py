"""POST /predict with a JSON body: base64 images, the same limits and answers as multipart,
and clear 4xx answers to hostile JSON."""
from __future__ import annotations

import base64
import io
import json

import pytest

from app.json_uploads import json_body_limit
from harness.images import encode, photo


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def error_of(response):
    return response.status_code, (response.get_json() or {}).get("error", {}).get("code")


@pytest.fixture(scope="module")
def png():
    return encode(photo(seed=5))


def test_image_answers_as_multipart_does(client, png):
    form = client.post("/predict", data={"file": (io.BytesIO(png), "a.png")})
    for body in ({"image": b64(png)},
                 {"image": "data:image/png;base64," + b64(png)},
                 {"image": base64.urlsafe_b64encode(png).decode().rstrip("=")},
                 {"image": base64.encodebytes(png).decode()},  # MIME line breaks
                 {"images": [b64(png)]}):
        r = client.post("/predict", json=body)
        assert r.status_code == 200, (list(body), r.get_json())
        assert r.get_json() == form.get_json()


def test_images_is_a_batch_like_several_files(client, png):
    other = encode(photo(seed=9, colour=(30, 40, 220)), "JPEG")
    form = client.post("/predict", data={"file": [(io.BytesIO(png), "a.png"),
                                                  (io.BytesIO(other), "b.jpg")]})
    r = client.post("/predict", json={"images": [b64(png), b64(other)]})
    assert r.status_code == 200
    got, want = r.get_json()["predictions"], form.get_json()["predictions"]
    assert [p["filename"] for p in got] == ["images[0]", "images[1]"]
    assert [{k: v for k, v in p.items() if k != "filename"} for p in got] == \
        [{k: v for k, v in p.items() if k != "filename"} for p in want]


def test_bad_image_in_a_batch_is_named(client, png):
    r = client.post("/predict", json={"images": [b64(png), b64(b"not an image")]})
    assert error_of(r) == (400, "invalid_image")
    assert r.get_json()["error"]["message"].startswith("images[1]: ")


def test_max_batch_applies(make_app, png):
    client = make_app(MAX_BATCH=2).test_client()
    r = client.post("/predict", json={"images": [b64(png)] * 3})
    assert error_of(r) == (413, "payload_too_large")
    assert "at most 2" in r.get_json()["error"]["message"]


def test_upload_limit_applies_to_decoded_bytes(make_app):
    limit_mb = 0.25
    client = make_app(MAX_UPLOAD_MB=limit_mb).test_client()
    limit = int(limit_mb * 2**20)
    # Just under the limit decoded is accepted as far as size goes (then it is no image),
    # although its base64 body is a third larger than the limit.
    r = client.post("/predict", json={"image": b64(b"\0" * (limit - 1))})
    assert error_of(r) == (400, "invalid_image")
    r = client.post("/predict", json={"images": [b64(b"\0" * (limit // 2 + 1))] * 2})
    assert error_of(r) == (413, "payload_too_large")
    assert "0.25 MB" in r.get_json()["error"]["message"]
    # A body over the JSON limit is refused before it is read.
    huge = b'{"image": "' + b"A" * json_body_limit(limit) + b'"}'
    r = client.post("/predict", data=huge, content_type="application/json")
    assert error_of(r) == (413, "payload_too_large")


@pytest.mark.parametrize("body, code", [
    (b"", "invalid_json"),
    (b"{", "invalid_json"),
    (b"{'image': 'x'}", "invalid_json"),
    (b'{"image": "\xff\xfe\xfa"}', "invalid_json"),  # not UTF-8
    (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),  # nested junk
    (b"NaN", "invalid_field"),
    (b"[]", "invalid_field"),
    (b'"aGVsbG8="', "invalid_field"),
    (b"null", "invalid_field"),
    (b"{}", "missing_file"),
    (b'{"images": []}', "missing_file"),
    (b'{"file": "x"}', "invalid_field"),
    (b'{"image": "x", "images": ["x"]}', "invalid_field"),
    (b'{"image": 123}', "invalid_field"),
    (b'{"image": null}', "invalid_field"),
    (b'{"image": ["aGVsbG8="]}', "invalid_field"),
    (b'{"image": {"b64": "aGVsbG8="}}', "invalid_field"),
    (b'{"images": "aGVsbG8="}', "invalid_field"),
    (b'{"images": [1, 2]}', "invalid_field"),
    (b'{"images": [["aGVsbG8="]]}', "invalid_field"),
    (b'{"images": {"0": "aGVsbG8="}}', "invalid_field"),
    (b'{"image": "not base64 at all!"}', "invalid_base64"),
    (b'{"image": "aGVsbG8=x"}', "invalid_base64"),
    (b'{"image": "A"}', "invalid_base64"),
    (b'{"image": "data:image/png,rawtext"}', "invalid_base64"),
    (b'{"image": "data:;base64,!!!"}', "invalid_base64"),
    (b'{"image": "\\u0000\\u0001"}', "invalid_base64"),
    (b'{"image": ""}', "invalid_image"),
    (b'{"image": "aGVsbG8="}', "invalid_image"),
    (b'{"url": "https://example.com/a.png"}', "url_fetch_disabled"),
])
def test_hostile_json_gets_a_clear_4xx(client, body, code):
    r = client.post("/predict", data=body, content_type="application/json")
    status, got = error_of(r)
    assert got == code, (body[:60], r.get_json())
    assert status in (400, 413)
    message = r.get_json()["error"]["message"]
    assert message and len(message) < 400


def test_huge_string_in_a_wrong_place_is_refused_without_echo(make_app):
    client = make_app(MAX_UPLOAD_MB=1).test_client()
    key = "k" * 500_000
    r = client.post("/predict", data=json.dumps({key: 1}), content_type="application/json")
    assert error_of(r) == (400, "invalid_field")
    assert len(r.get_json()["error"]["message"]) < 200


def test_chunked_json_over_the_limit(make_app):
    client = make_app(MAX_UPLOAD_MB=0.1).test_client()

    def chunks():
        yield b'{"image": "'
        for _ in range(100):
            yield b"A" * 4096
        yield b'"}'

    r = client.post("/predict", content_type="application/json",
                    headers={"Transfer-Encoding": "chunked"},
                    environ_overrides={"wsgi.input": io.BytesIO(b"".join(chunks())),
                                       "wsgi.input_terminated": True, "CONTENT_LENGTH": ""})
    assert error_of(r) == (413, "payload_too_large")
    assert "0.1 MB of images" in r.get_json()["error"]["message"]


def test_form_page_does_not_take_json(client, png):
    r = client.post("/", json={"image": b64(png)}, headers={"Accept": "text/html"})
    assert r.status_code == 415
