"""The structure pre-scan (classifier/decode_guard.py) and the reduce-before-convert step.

Each refusal here is of a small version of a file in harness/decode_attacks.py: with the
guard removed, Pillow opens it and the test fails (the full-size files cost 100-650 MB
and up to 11 s of CPU; docs/reliability.md).
"""
from __future__ import annotations

import struct

import numpy as np
import pytest
from PIL import Image

from classifier import decode_guard, images
from classifier.images import ImageTooLarge, InvalidImage, load_rgb, open_checked
from harness import decode_attacks as attacks
from harness.hostile_images import valid_images
from tests.images.conftest import big_photo, encode

SIDE = 448
REFUSED = (InvalidImage, ImageTooLarge)


@pytest.mark.parametrize("name, data", [
    ("tiff strips beyond its rows", attacks.tiff_many_strips(10_000)),
    ("jpeg segments before the scan", attacks.jpeg_many_markers(5_000)),
    ("png private chunks", attacks.png_private_chunks(5_000)),
    ("apng frames", attacks.apng_many_frames(4_200)),
    ("png exif of 2 MB", attacks.png_with_exif(attacks.exif_with_big_array(2**20))),
    ("webp exif of 2 MB", attacks.webp_with_exif(attacks.exif_with_big_array(2**20))),
    ("gif extensions before the frame", attacks.gif_many_extensions(5_000)),
    ("webp frames", attacks.webp_many_frames(5_000)),
    ("jpeg scans", attacks.jpeg_many_scans(200, side=64)),
    ("jpeg icc over 16 MB", attacks.jpeg_with_icc(260)),
])
def test_amplifying_structure_is_refused_before_pillow(name, data, monkeypatch):
    opened = []
    monkeypatch.setattr(images.Image, "open", lambda *a, **k: opened.append(a))
    with pytest.raises(REFUSED):
        open_checked(data, min_side=SIDE)
    assert not opened, name  # refused from the header walk alone


def test_a_fetched_url_is_walked_before_pillow_opens_it(monkeypatch):
    """URL input sniffs the bytes with Image.open before decoding: the walk comes first."""
    from app import url_fetch
    from app.errors import ApiError

    opened = []
    monkeypatch.setattr(url_fetch.Image, "open", lambda *a, **k: opened.append(a))
    with pytest.raises(ApiError, match="not an image"):
        url_fetch._check_image(attacks.jpeg_many_markers(5_000), "http://x/a.jpg", "image/jpeg")
    assert not opened


def test_tiff_strips_are_bounded_by_the_image_geometry():
    """2 rows need at most 2 strips; a real 2-row TIFF passes."""
    with pytest.raises(InvalidImage, match="strips or tiles"):
        decode_guard.check_structure(attacks.tiff_many_strips(3), 10**6)
    decode_guard.check_structure(encode(Image.new("L", (1, 2)), "TIFF"), 10**6)


def test_png_text_is_held_to_our_metadata_bound():
    with pytest.raises(InvalidImage, match="text chunks"):
        open_checked(attacks.png_text_chunks(20))


def test_heic_grid_counts_every_coded_picture():
    """A 1 MP grid of 16 tiles: 2 MP of coded pictures, over 3x a 0.5 MP budget."""
    data = attacks.heif_grid(1024, 256)
    decode_guard.check_structure(data, 10**6)
    with pytest.raises(ImageTooLarge, match="coded pictures"):
        decode_guard.check_structure(data, 500_000)


def _box(kind: bytes, body: bytes, full: bool = False) -> bytes:
    body = (b"\x00" * 4 if full else b"") + body
    return struct.pack(">I4s", 8 + len(body), kind) + body


def test_heic_items_that_read_the_same_bytes_twice_are_refused():
    """Two items whose extents each cover the whole file (libheif would read it twice)."""
    def build(length: int) -> bytes:
        items = b"".join(struct.pack(">HHHII", i, 0, 1, 0, length) for i in (1, 2))
        iloc = _box(b"iloc", b"\x44\x00" + struct.pack(">H", 2) + items, full=True)
        return _box(b"ftyp", b"heic\x00\x00\x00\x00") + _box(b"meta", iloc, full=True)
    decode_guard.check_structure(build(20), 10**6)
    with pytest.raises(InvalidImage, match="same data used twice"):
        decode_guard.check_structure(build(len(build(0))), 10**6)


def test_heic_item_count_is_bounded():
    many = _box(b"iinf", struct.pack(">H", decode_guard.MAX_BLOCKS + 1), full=True)
    data = _box(b"ftyp", b"heic\x00\x00\x00\x00") + _box(b"meta", many, full=True)
    with pytest.raises(InvalidImage, match="items"):
        decode_guard.check_structure(data, 10**6)


def test_webp_heic_and_avif_are_held_to_their_pixel_cost():
    """libwebp holds two RGBA canvases beside Pillow's: a quarter of the pixels."""
    with pytest.raises(ImageTooLarge, match="10.0 MP of WEBP"):
        open_checked(attacks.webp_big_canvas(3200), min_side=SIDE)
    assert open_checked(attacks.webp_big_canvas(1000), min_side=SIDE).size == (500, 500)


def test_every_valid_upload_passes_the_walk():
    photo = big_photo((800, 600))
    files = dict(valid_images())
    files.update({
        "tiff_lzw": encode(photo, "TIFF", compression="tiff_lzw"),
        "tiff_jpeg": encode(photo, "TIFF", compression="tiff_jpeg"),
        "mpo": encode(photo, "MPO", save_all=True, append_images=[photo]),
        "apng": encode(photo, "PNG", save_all=True, append_images=[photo, photo]),
        "webp_animated": encode(photo, "WEBP", save_all=True, append_images=[photo]),
        "jpeg_icc_exif": encode(photo, "JPEG", progressive=True, icc_profile=b"p" * 300_000,
                                exif=Image.Exif().tobytes()),
        "heic_grid": attacks.heif_grid(1024, 256),
    })
    for name, data in files.items():
        decode_guard.check_structure(data, images.DEFAULT_MAX_IMAGE_PIXELS), name


# ---------------------------------------------------------------- reduce before convert
def _palette(size, transparent: bool = False) -> Image.Image:
    im = big_photo(size, seed=3).convert("P", palette=Image.Palette.ADAPTIVE)
    if transparent:
        im.info["transparency"] = 0
    return im


@pytest.mark.parametrize("make", [
    lambda: _palette((1900, 1300)),
    lambda: _palette((1900, 1300), transparent=True),
    lambda: big_photo((1900, 1300), seed=4).convert("1"),
    lambda: Image.fromarray((np.arange(1900 * 1300, dtype=np.uint32).reshape(1300, 1900)
                             % 60000).astype(np.uint16)),
    lambda: big_photo((1900, 1300), seed=5).convert("PA"),
], ids=["palette", "palette_transparent", "1bit", "16bit", "palette_alpha"])
def test_band_conversion_matches_converting_in_full(make, monkeypatch):
    """Same pixels as the full-size conversion it replaces, and no full-size copy."""
    im = make()
    expected = images._to_rgb(im).reduce(1300 // 300)
    converted = []
    real = images._to_rgb
    monkeypatch.setattr(images, "_to_rgb",
                        lambda band, peak=None: converted.append(band.size) or real(band, peak))
    out = images._reduce(im, 300)
    assert out.tobytes() == expected.tobytes() and out.mode == "RGB"
    assert max(w * h for w, h in converted) <= 2 * images._BAND_PIXELS
    full = images._reduce(im, None)  # EXACT_DECODE: converted in bands too, not reduced
    assert full.size == im.size and full.tobytes() == real(im).tobytes()


def test_palette_png_is_decoded_without_a_full_size_rgb_copy(monkeypatch):
    data = attacks.png_palette_one_colour(2000)
    sizes = []
    real = Image.Image.convert
    monkeypatch.setattr(Image.Image, "convert",
                        lambda self, *a, **k: sizes.append(self.size) or real(self, *a, **k))
    im = open_checked(data, min_side=SIDE)
    assert im.size == (500, 500) and im.getpixel((10, 10)) == (32, 128, 224)
    assert max(w * h for w, h in sizes) <= 2 * images._BAND_PIXELS
    assert load_rgb(data, SIDE).tobytes() == im.tobytes()  # training decodes the same


def _rescanned(jpeg: bytes, copies: int) -> bytes:
    """`jpeg` with its last scan (SOS to EOI) repeated `copies` times."""
    last = jpeg.rindex(b"\xff\xda")
    return jpeg[:last] + jpeg[last:-2] * copies + b"\xff\xd9"


def test_scans_are_counted_only_where_libjpeg_would_read_them():
    """A baseline JPEG whose first scan holds every component is read as that one scan (the
    count is skipped: 1.7 ms of a phone photo's request); one whose first scan leaves a
    component out may have more, and is counted."""
    baseline = attacks.image_bytes("JPEG", (64, 64))
    repeated = _rescanned(baseline, 200)
    decode_guard.check_structure(repeated, 10**6)  # not counted
    with pytest.raises(InvalidImage, match="could not be decoded"):
        open_checked(repeated, min_side=SIDE)  # libjpeg stops at the second scan

    sos = baseline.index(b"\xff\xda")
    assert baseline[sos + 4] == 3  # Y, Cb and Cr in the first scan
    partial = bytearray(baseline)
    partial[sos + 4] = 1  # only Y: a sequential file with several scans
    with pytest.raises(InvalidImage, match="scans"):
        decode_guard.check_structure(_rescanned(bytes(partial), 200), 10**6)
    with pytest.raises(InvalidImage, match="scans"):
        decode_guard.check_structure(attacks.jpeg_many_scans(200, side=64), 10**6)
