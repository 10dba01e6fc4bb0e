"""Large photo-like images for the decoding tests, made once per session with Pillow."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from harness.images import encode

TWELVE_MP = (4032, 3024)  # a phone's 4:3 12 MP photo, stored landscape


def big_photo(size=TWELVE_MP, seed: int = 0) -> Image.Image:
    """Smooth noise with a red block in the stored top-left corner, to see where it lands."""
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)
    im.paste((255, 0, 0), (0, 0, w // 8, h // 8))
    return im


@pytest.fixture(scope="session")
def photo_12mp() -> Image.Image:
    return big_photo()


@pytest.fixture(scope="session")
def jpeg_12mp(photo_12mp) -> bytes:
    return encode(photo_12mp, "JPEG", quality=90)


def flat_gray_jpeg(width: int, height: int) -> bytes:
    """A real baseline JPEG of any size, all mid-gray, written by hand in about width x height / 256
    bytes (Pillow would need the whole image in memory): every 8x8 block is one 1-bit DC code
    (difference 0) and one 1-bit end-of-block code, so the entropy-coded data is all zero bits."""
    assert width % 32 == 0 and height % 8 == 0  # whole blocks, and whole bytes of them

    def segment(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body

    one_code = bytes([1] + [0] * 15) + b"\x00"  # one 1-bit code, for symbol 0
    return (b"\xff\xd8"
            + segment(0xDB, b"\x00" + bytes([1] * 64))  # quantisation table 0: all ones
            + segment(0xC0, b"\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big")
                      + b"\x01\x01\x11\x00")  # 8-bit, one component, no subsampling
            + segment(0xC4, b"\x00" + one_code)  # DC table 0
            + segment(0xC4, b"\x10" + one_code)  # AC table 0 (symbol 0: end of block)
            + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
            + bytes(width * height // 256)  # 2 bits per 64-pixel block
            + b"\xff\xd9")
