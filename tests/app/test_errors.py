"""Every error code of the contract, on the API (JSON) and on the form (a friendly page)."""
from __future__ import annotations

import io

import pytest

from app.model_service import model_service
from harness.hostile_images import png_declaring
from harness.images import TEXT, encode, photo, truncated


def error_of(response) -> tuple[int, str]:
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["message"].strip()
    return response.status_code, body["error"]["code"]


def test_missing_file_variants(client):
    assert error_of(client.post("/predict")) == (400, "missing_file")
    r = client.post("/predict", data={"other": (io.BytesIO(encode(photo())), "a.png")})
    assert error_of(r) == (400, "missing_file")
    assert "other" in r.get_json()["error"]["message"]  # says which field it did get
    assert error_of(client.post("/predict", data={"file": "not a file"})) == (400, "missing_file")


def test_a_form_field_beside_the_file_is_refused_not_ignored(client):
    """top_k sent as a form field rather than in the query would be silently dropped."""
    image = encode(photo())
    r = client.post("/predict", data={"file": (io.BytesIO(image), "a.png"), "top_k": "1"})
    assert error_of(r) == (400, "invalid_field") and "'top_k'" in r.get_json()["error"]["message"]
    assert client.post("/predict?top_k=1", data={"file": (io.BytesIO(image), "a.png")}) \
        .status_code == 200


def half_of(fmt: str) -> bytes:
    return truncated(encode(photo((128, 96)), fmt))


@pytest.mark.parametrize("data", [b"", TEXT, half_of("PNG"), half_of("JPEG"), half_of("GIF"),
                                  b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
                                  bytes(range(256)) * 8],
                         ids=["zero-bytes", "text", "trunc-png", "trunc-jpeg", "trunc-gif",
                              "png-magic-only", "binary-noise"])
def test_invalid_images(client, data):
    multipart = client.post("/predict", data={"file": (io.BytesIO(data), "x.png")})
    assert error_of(multipart) == (400, "invalid_image")
    raw = client.post("/predict", data=data, content_type="image/png")
    assert error_of(raw) == (400, "invalid_image")


def test_batch_error_names_the_file(client):
    r = client.post("/predict", data={"file": [(io.BytesIO(encode(photo())), "good.png"),
                                               (io.BytesIO(TEXT), "bad.txt")]})
    assert error_of(r) == (400, "invalid_image")
    assert "bad.txt" in r.get_json()["error"]["message"]


def test_decompression_bomb_refused_from_header(client, monkeypatch):
    import PIL.ImageFile

    # Decoding would have to call load(); refusing from the header never does.
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load",
                        lambda self: pytest.fail("pixels were decoded"))
    r = client.post("/predict", data=png_declaring(100_000, 100_000), content_type="image/png")
    assert error_of(r) == (413, "image_too_large")


def test_max_image_pixels_setting(make_app):
    small = make_app(MAX_IMAGE_PIXELS=1000).test_client()
    r = small.post("/predict", data=encode(photo((40, 30))), content_type="image/png")
    assert error_of(r) == (413, "image_too_large")
    r = small.post("/predict", data=encode(photo((30, 30))), content_type="image/png")
    assert r.status_code == 200


def test_payload_too_large(make_app):
    client = make_app(MAX_UPLOAD_MB="0.05").test_client()
    big = bytes(100_000)
    assert error_of(client.post("/predict", data=big, content_type="image/png")) == \
        (413, "payload_too_large")
    r = client.post("/predict", data={"file": (io.BytesIO(big), "big.png")})
    assert error_of(r) == (413, "payload_too_large")
    r = client.post("/", data={"file": (io.BytesIO(big), "big.png")})
    assert r.status_code == 413 and b"too large" in r.data


def test_too_many_files_and_form_parts(make_app):
    client = make_app(MAX_BATCH=2).test_client()
    files = [(io.BytesIO(encode(photo(seed=i))), f"{i}.png") for i in range(3)]
    r = client.post("/predict", data={"file": files})
    assert error_of(r) == (413, "payload_too_large")
    assert "at most 2" in r.get_json()["error"]["message"]
    fields = {f"field{i}": "x" for i in range(500)}
    fields["file"] = (io.BytesIO(encode(photo())), "a.png")  # makes it multipart
    r = client.post("/predict", data=fields)
    assert error_of(r) == (413, "payload_too_large")
    assert "form parts" in r.get_json()["error"]["message"]


def test_unsupported_media_types(client):
    for ctype, body in [("application/xml", b'<file>x</file>'), ("text/plain", TEXT),
                        ("application/octet-stream", encode(photo())),
                        ("video/mp4", b"\x00" * 64)]:
        assert error_of(client.post("/predict", data=body, content_type=ctype)) == \
            (415, "unsupported_media_type"), ctype


def test_malformed_multipart(client):
    boundary = "XyZ"
    bodies = [b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
              b"\r\n" + encode(photo())[:50],  # never closed
              b"garbage without any boundary",
              b"--XyZ\r\n\r\n\r\n--XyZ--\r\n"]
    for body in bodies:
        r = client.post("/predict", data=body,
                        content_type=f"multipart/form-data; boundary={boundary}")
        assert 400 <= r.status_code < 500
        assert r.get_json()["error"]["code"] in ("missing_file", "invalid_image", "bad_request")
    r = client.post("/predict", data=b"x", content_type="multipart/form-data")  # no boundary
    assert error_of(r) == (400, "missing_file")


def test_not_found_and_method_not_allowed(client):
    assert error_of(client.get("/nope")) == (404, "not_found")
    assert error_of(client.get("/predict")) == (405, "method_not_allowed")
    assert "POST" in client.get("/predict").headers["Allow"]
    assert error_of(client.delete("/model")) == (405, "method_not_allowed")
    page = client.get("/nope", headers={"Accept": "text/html"})
    assert page.status_code == 404 and page.mimetype == "text/html"


def test_unexpected_bug_is_a_json_500_without_details(app, client, monkeypatch):
    service = model_service(app)

    def broken(*args):
        raise ZeroDivisionError("secret internal detail")
    monkeypatch.setattr(service, "classify", broken)
    r = client.post("/predict", data=encode(photo()), content_type="image/png")
    assert error_of(r) == (500, "internal_error")
    assert "secret" not in r.get_data(as_text=True)
    assert service.ready


def test_inference_failure_is_503_model_unavailable(app, client, monkeypatch):
    predictor = model_service(app).predictor

    def fails(images):
        raise RuntimeError("onnxruntime out of memory")
    monkeypatch.setattr(predictor, "predict_prepared", fails)
    r = client.post("/predict", data=encode(photo()), content_type="image/png")
    assert error_of(r) == (503, "model_unavailable")
    assert r.headers["Retry-After"]


@pytest.mark.parametrize("data,status,code", [
    (TEXT, 400, "invalid_image"), (b"", 400, "invalid_image"),
    (png_declaring(100_000, 100_000), 413, "image_too_large")])
def test_form_shows_friendly_errors_with_same_status(client, data, status, code):
    r = client.post("/", data={"file": (io.BytesIO(data), "upload.png")})
    assert r.status_code == status
    assert r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    assert 'role="alert"' in page and "Sorry, that did not work." in page
    assert f"({code})" in page
    assert 'id="upload-form"' in page  # the form is there to try again


def test_form_without_file(client):
    r = client.post("/", data={})
    assert r.status_code == 400 and b"(missing_file)" in r.data


@pytest.mark.parametrize("path", ["/predict", "/"])
def test_part_without_a_name_is_missing_file(client, path):
    body = (b'--B\r\nContent-Disposition: form-data; filename="a.png"\r\n\r\n'
            + encode(photo()) + b"\r\n--B--\r\n")
    r = client.post(path, data=body, content_type="multipart/form-data; boundary=B")
    assert r.status_code == 400
    if path == "/predict":
        assert error_of(r) == (400, "missing_file")
    else:
        assert b"(missing_file)" in r.data


class BrokenBody(io.RawIOBase):
    """A request body whose read fails the way gunicorn's does on a bad or cut-off upload."""

    def __init__(self, exc: Exception):
        self.exc, self.sent = exc, False

    def readable(self):
        return True

    def readinto(self, buf):
        if not self.sent:  # a little of the body first, like a real upload
            self.sent = True
            buf[:4] = b"--B\r"
            return 4
        raise self.exc


def body_errors():
    from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkSize, NoMoreData

    return [InvalidChunkSize(b"zz"), ChunkMissingTerminator(b"xx"), NoMoreData(b""),
            TimeoutError("timed out")]  # a READ_TIMEOUT stall (werkzeug: ClientDisconnected)


@pytest.mark.parametrize("exc", body_errors(), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("path,ctype", [("/predict", "multipart/form-data; boundary=B"),
                                        ("/predict", "image/png"),
                                        ("/", "multipart/form-data; boundary=B")])
def test_unreadable_body_is_400_bad_request(client, exc, path, ctype):
    r = client.post(path, content_type=ctype, headers={"Transfer-Encoding": "chunked"},
                    environ_overrides={"wsgi.input": io.BufferedReader(BrokenBody(exc)),
                                       "wsgi.input_terminated": True, "CONTENT_LENGTH": ""})
    assert r.status_code == 400
    if path == "/predict":
        assert error_of(r) == (400, "bad_request")
        assert "could not be read" in r.get_json()["error"]["message"]
    else:
        assert b"(bad_request)" in r.data and b"could not be read" in r.data


def test_read_timeout_is_set_on_the_gunicorn_socket(make_app):
    class Sock:
        timeout = None

        def settimeout(self, value):
            self.timeout = value

    sock = Sock()
    r = make_app(READ_TIMEOUT="3.5").test_client().get(
        "/healthz", environ_base={"gunicorn.socket": sock})
    assert r.status_code == 200 and sock.timeout == 3.5
