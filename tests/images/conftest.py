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
