"""The form shrinks a phone photo in the browser before sending it (slow mobile links).

A photo is decoded by the server no larger than twice the model's input anyway, so the
form sends that much (about 100 KB instead of 3-5 MB): upright, whatever its EXIF
orientation. What Chromium cannot decode (HEIC) goes as it is.
"""
from __future__ import annotations

import email.parser
import io

import numpy as np
import pytest
from PIL import Image

from harness.browser import CHROMIUM, SKIP_REASON, page_opener
from harness.images import encode
from harness.thread_server import served_in_thread

TIMEOUT_MS = 30_000

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)]


class Recording:
    """WSGI middleware keeping the body of every POST /predict (the browser's own record of
    a multipart body with a file in it is empty)."""

    def __init__(self, app):
        self.app, self.bodies = app, []

    def __call__(self, environ, start_response):
        if environ["PATH_INFO"] == "/predict":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            self.bodies.append((environ["CONTENT_TYPE"], body))
            environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def recording(make_app):
    return Recording(make_app())


@pytest.fixture(scope="module")
def server_url(recording):
    with served_in_thread(recording) as url:
        yield url


@pytest.fixture
def open_page(playwright, server_url, recording):
    recording.bodies.clear()
    with page_opener(playwright, server_url, TIMEOUT_MS) as open_:
        yield open_


def upright_photo(size=(1200, 1600)) -> Image.Image:
    """Portrait noise (so it compresses like a photo) with its top-left quarter red."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 60, (size[1], size[0], 3)).astype(np.uint8)
    pixels[: size[1] // 2, : size[0] // 2] = (230, 30, 30)
    return Image.fromarray(pixels)


def sent_file(content_type: str, body: bytes) -> bytes:
    """The `file` part of a multipart body."""
    message = email.parser.BytesParser().parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    (part,) = [p for p in message.get_payload()
               if p.get_param("name", header="content-disposition") == "file"]
    return part.get_payload(decode=True)


def classify(page, recording, path) -> bytes:
    """Submit `path` through the form; the bytes the server received for it."""
    page.set_input_files("#file", str(path))
    page.click("#submit")
    page.locator("#result").wait_for(state="visible")
    (posted,) = recording.bodies
    return sent_file(*posted)


def test_a_sideways_phone_photo_is_sent_upright_at_the_size_the_server_decodes(
        open_page, recording, tmp_path):
    stored = upright_photo().transpose(Image.Transpose.ROTATE_90)  # EXIF 6 turns it back
    path = tmp_path / "IMG_0001.jpg"
    path.write_bytes(encode(stored, "JPEG", orientation=6, quality=95))
    page = open_page()
    side = int(page.get_attribute("#upload-form", "data-decode-side"))
    sent = classify(page, recording, path)
    assert len(sent) < path.stat().st_size / 10
    im = Image.open(io.BytesIO(sent))
    assert im.format == "JPEG" and min(im.size) == side and im.height > im.width  # upright
    pixels = np.asarray(im.convert("RGB"), dtype=float)
    h, w = pixels.shape[0] // 2, pixels.shape[1] // 2
    assert pixels[: h - 2, : w - 2, 0].mean() > 180  # the red quarter is top left
    assert pixels[h + 2:, w + 2:, 0].mean() < 80
    assert "sent as" in page.text_content("#status")
    assert not page.errors


def test_what_the_browser_cannot_decode_is_sent_as_it_is(open_page, recording, tmp_path):
    path = tmp_path / "IMG_0002.heic"
    path.write_bytes(encode(upright_photo((600, 800)), "HEIF"))
    page = open_page()
    assert classify(page, recording, path) == path.read_bytes()
    assert "sent as" not in page.text_content("#status")


def test_a_photo_already_small_is_sent_as_it_is(open_page, recording, tmp_path):
    path = tmp_path / "small.png"
    path.write_bytes(encode(upright_photo((40, 50)), "PNG"))
    page = open_page()
    assert classify(page, recording, path) == path.read_bytes()
