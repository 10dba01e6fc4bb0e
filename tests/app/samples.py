"""Images made in-test with Pillow: every format and mode an upload can bring, and broken ones."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

RGB_FORMATS = ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"]


def photo(size=(64, 48), seed=0, colour=(220, 30, 30)) -> Image.Image:
    """Noise with a coloured square, like the conftest dataset."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 90, (size[1], size[0], 3)).astype(np.uint8)
    pixels[4:28, 4:28] = colour
    return Image.fromarray(pixels)


def encode(im: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def exif_rotated_jpeg() -> tuple[bytes, Image.Image]:
    """A JPEG stored sideways with EXIF orientation 6, and the upright image it shows."""
    upright = photo((64, 48))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6 undoes this
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", exif=exif.tobytes(), quality=95), upright


def mode_variants() -> dict[str, bytes]:
    base = photo()
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    sixteen = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    assert sixteen.mode.startswith("I;16")
    return {
        "RGBA-png": encode(rgba, "PNG"),
        "P-png": encode(base.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "L-png": encode(base.convert("L"), "PNG"),
        "LA-png": encode(base.convert("LA"), "PNG"),
        "CMYK-jpeg": encode(base.convert("CMYK"), "JPEG"),
        "CMYK-tiff": encode(base.convert("CMYK"), "TIFF"),
        "I16-png": encode(sixteen, "PNG"),
        "1-bmp": encode(base.convert("1"), "BMP"),
    }


def animated_gif() -> bytes:
    frames = [photo(seed=i, colour=c) for i, c in enumerate([(220, 30, 30), (30, 40, 220)])]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100,
                  loop=0)


def png_bomb(width=100_000, height=100_000) -> bytes:
    """A valid PNG header declaring width x height pixels, with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def truncated(fmt: str = "PNG") -> bytes:
    data = encode(photo((128, 96)), fmt)
    return data[: len(data) // 2]


TEXT = b"hello, this is not an image\n" * 10
