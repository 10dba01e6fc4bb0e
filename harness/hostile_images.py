"""Hostile image files: what the service must accept, files that lie about their size
(decompression bombs), junk and damaged copies of every format.

Each family is a function returning {name: bytes}; harness/hostile_cases.py sends every
entry to the service. To add a family, write a function here and one loop in
`hostile_cases.corpus`. Nothing is random unless given an RNG with a seed.
"""
from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
from PIL import Image

from harness.images import EXT, FORMATS, animated_gif, exif_rotated, image_bytes, truncated


# ---------------------------------------------------------------- images
def valid_images() -> dict[str, bytes]:
    """Images the service must accept (200): every format, odd modes and shapes."""
    out = {f"{fmt.lower()}_rgb": image_bytes(fmt) for fmt in FORMATS}
    out.update({
        "png_1x1": image_bytes("PNG", (1, 1)),
        "jpeg_1x1": image_bytes("JPEG", (1, 1)),
        "gif_1x1": image_bytes("GIF", (1, 1)),
        "png_1x20000": image_bytes("PNG", (1, 20000)),
        "png_20000x1": image_bytes("PNG", (20000, 1)),
        "png_grayscale": image_bytes("PNG", mode="L"),
        "png_palette": image_bytes("PNG", mode="P"),
        "png_rgba": image_bytes("PNG", mode="RGBA"),
        "png_la": image_bytes("PNG", mode="LA"),
        "png_1bit": image_bytes("PNG", mode="1"),
        "png_16bit": _png16(),
        "jpeg_cmyk": image_bytes("JPEG", mode="CMYK"),
        "jpeg_grayscale": image_bytes("JPEG", mode="L"),
        "jpeg_progressive": image_bytes("JPEG", progressive=True),
        "jpeg_exif_rotated": exif_rotated("JPEG")[0],
        "heic_exif_rotated": exif_rotated("HEIF")[0],
        "avif_exif_rotated": exif_rotated("AVIF")[0],
        "gif_animated": animated_gif(),
        "webp_lossless_rgba": image_bytes("WEBP", mode="RGBA", lossless=True),
        "tiff_float": _tiff_float(),
        "tiff_two_pages": _tiff_two_pages(),
        "bmp_palette": image_bytes("BMP", mode="P"),
        "png_1900x1900": _png_gradient(1900, 1900),
    })
    return out


def _png16() -> bytes:
    arr = (np.arange(48 * 40, dtype=np.uint16).reshape(40, 48) * 30)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _png_gradient(width: int, height: int) -> bytes:
    """A large but compressible image (a few MP, tens of KB): decoded in full, must be a 200."""
    arr = np.add.outer(np.arange(height) % 256, np.arange(width) % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, "PNG")
    return buf.getvalue()


def _tiff_float() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.linspace(0, 1, 48 * 40, dtype=np.float32).reshape(40, 48)).save(buf, "TIFF")
    return buf.getvalue()


def _tiff_two_pages() -> bytes:
    buf = io.BytesIO()
    a, b = Image.new("RGB", (20, 20), (9, 9, 9)), Image.new("RGB", (2000, 2000), (1, 1, 1))
    a.save(buf, "TIFF", save_all=True, append_images=[b], compression="tiff_deflate")
    return buf.getvalue()


def other_formats() -> dict[str, bytes]:
    """Formats Pillow can open that the product does not list: never a 5xx, 200 or 400 both fine."""
    out = {}
    for fmt, mode in (("PPM", "RGB"), ("PCX", "RGB"), ("TGA", "RGB"), ("ICO", "RGBA"),
                      ("SGI", "RGB"), ("DDS", "RGBA"), ("IM", "RGB"), ("SPIDER", "F"),
                      ("EPS", "RGB"), ("PDF", "RGB"), ("JPEG2000", "RGB"), ("QOI", "RGB")):
        try:
            out[f"other_{fmt.lower()}"] = image_bytes(fmt, (16, 16), mode=mode)
        except Exception:  # noqa: BLE001 - a format this Pillow build cannot write
            pass
    return out


# ---------------------------------------------------------------- bombs
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, fix_crc: bool = True) -> bytes:
    """A 1x1 PNG whose IHDR claims width x height (CRC recomputed so the header is believed)."""
    png = bytearray(image_bytes("PNG", (1, 1)))
    png[16:24] = struct.pack(">II", width, height)
    if fix_crc:
        png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def png_real_bomb(width: int = 8000, height: int = 8000) -> bytes:
    """An honest 1-bit PNG of width x height zeros: a few KB that decode to width*height pixels."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def gif_declaring(width: int, height: int, frame_too: bool = False) -> bytes:
    gif = bytearray(image_bytes("GIF", (1, 1)))
    gif[6:10] = struct.pack("<HH", width, height)
    if frame_too:
        at = gif.index(b",", 13)  # image descriptor: ',' left top width height
        gif[at + 5:at + 9] = struct.pack("<HH", width, height)
    return bytes(gif)


def bmp_declaring(width: int, height: int) -> bytes:
    bmp = bytearray(image_bytes("BMP", (1, 1)))
    bmp[18:26] = struct.pack("<ii", width, height)
    return bytes(bmp)


def tiff_declaring(width: int, height: int) -> bytes:
    """A hand-made little-endian grayscale TIFF claiming width x height, holding one byte."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, height),
               (279, 4, 1, 1)]
    ifd_size = 2 + 12 * len(entries) + 4
    data_at = 8 + ifd_size
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, typ, count, value in entries:
        value = data_at if tag == 273 else value
        packed = struct.pack("<HI", value, 0)[:4] if typ == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, typ, count) + packed
    out += struct.pack("<I", 0) + b"\x80"
    return bytes(out)


def jpeg_declaring(width: int, height: int, progressive: bool = False) -> bytes:
    jpg = bytearray(image_bytes("JPEG", (8, 8), progressive=progressive))
    marker = b"\xff\xc2" if progressive else b"\xff\xc0"
    at = jpg.index(marker)
    jpg[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(jpg)


def webp_declaring(width: int, height: int) -> bytes:
    """A lossless WebP whose VP8L header claims width x height (14 bits each, max 16384)."""
    webp = bytearray(image_bytes("WEBP", (1, 1), lossless=True))
    at = webp.index(b"VP8L") + 8
    assert webp[at] == 0x2F
    bits = struct.unpack("<I", webp[at + 1:at + 5])[0]
    bits = (bits & ~((1 << 28) - 1)) | ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14)
    webp[at + 1:at + 5] = struct.pack("<I", bits)
    return bytes(webp)


def webp_vp8x_canvas(width: int, height: int) -> bytes:
    """An extended WebP whose VP8X canvas is width x height (24-bit fields) around a 1x1 image."""
    inner = image_bytes("WEBP", (1, 1), lossless=True)[12:]  # the VP8L chunk
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + \
        (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + inner
    return b"RIFF" + struct.pack("<I", len(body)) + body


def bombs() -> dict[str, bytes]:
    """Tiny files declaring huge dimensions: the service must refuse them (413 image_too_large)
    or, where the format's decoder itself rejects the header, call them invalid (400)."""
    return {
        "bomb_png_ihdr_100k": png_declaring(100_000, 100_000),
        "bomb_png_ihdr_max": png_declaring(2**31 - 1, 2**31 - 1),
        "bomb_png_ihdr_wide": png_declaring(2**31 - 1, 1),
        "bomb_png_ihdr_badcrc": png_declaring(100_000, 100_000, fix_crc=False),
        "bomb_png_real_8000": png_real_bomb(),
        "bomb_gif_screen": gif_declaring(65535, 65535),
        "bomb_gif_frame": gif_declaring(65535, 65535, frame_too=True),
        "bomb_bmp_header": bmp_declaring(50_000, 50_000),
        "bomb_bmp_topdown": bmp_declaring(50_000, -50_000),
        "bomb_tiff_tags": tiff_declaring(100_000, 100_000),
        "bomb_tiff_tall": tiff_declaring(1, 4_000_000_000),
        "bomb_jpeg_sof0": jpeg_declaring(65000, 65000),
        "bomb_jpeg_sof2": jpeg_declaring(65000, 65000, progressive=True),
        "bomb_webp_vp8l": webp_declaring(16384, 16384),
        "bomb_webp_vp8x": webp_vp8x_canvas(1 << 24, 1 << 24),
        # 144 MP: past Pillow's warning but under its own error threshold, so only the
        # service's MAX_IMAGE_PIXELS check stands between these and a full decode.
        "bomb_png_144mp": png_declaring(12000, 12000),
        "bomb_gif_144mp": gif_declaring(12000, 12000, frame_too=True),
        "bomb_bmp_144mp": bmp_declaring(12000, 12000),
        "bomb_tiff_144mp": tiff_declaring(12000, 12000),
        "bomb_jpeg_144mp": jpeg_declaring(12000, 12000),
        "bomb_webp_144mp": webp_declaring(12000, 12000),
    }


def heif_avif_declaring(width: int, height: int) -> dict[str, bytes]:
    """HEIC and AVIF whose image-size ('ispe') box claims width x height over 48x40 pixels.

    libheif and libavif check the claim against the coded stream, so these are refused as
    invalid (400) or, where a header is believed, as too large (413): never decoded."""
    out = {}
    for fmt in ("HEIF", "AVIF"):
        data = bytearray(image_bytes(fmt))
        at = data.index(b"ispe") + 8  # box type, then 4 bytes of version and flags
        data[at:at + 8] = struct.pack(">II", width, height)
        out[f"{EXT[fmt]}_ispe_{width}x{height}"] = bytes(data)
    return out


# ---------------------------------------------------------------- junk
def junk() -> dict[str, bytes]:
    rng = random.Random(7)
    return {
        "zero_bytes": b"",
        "one_byte": b"\x89",
        "text": b"hello, this is not an image\n" * 20,
        "html": b"<html><body><script>alert(1)</script></body></html>",
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="99999" height="99999"/>',
        "json": b'{"file": "x.png"}',
        "pdf_header": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n",
        "png_magic_only": b"\x89PNG\r\n\x1a\n",
        "jpeg_magic_only": b"\xff\xd8\xff",
        "gif_magic_only": b"GIF89a",
        "riff_webp_empty": b"RIFF\x04\x00\x00\x00WEBP",
        "tiff_magic_only": b"II*\x00",
        "bmp_magic_only": b"BM",
        "random_1k": bytes(rng.getrandbits(8) for _ in range(1024)),
        "random_64k": bytes(rng.getrandbits(8) for _ in range(65536)),
        "nul_64k": b"\x00" * 65536,
    }


def bitflipped(data: bytes, rng: random.Random, flips: int = 8) -> bytes:
    out = bytearray(data)
    for _ in range(flips):
        if out:
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def mutants(rng: random.Random, per_format: int = 3) -> dict[str, bytes]:
    """Each format truncated at several points and bit-flipped in header and body."""
    out = {}
    for fmt in FORMATS:
        good = image_bytes(fmt, seed=rng.randrange(1000))
        for frac in (0.0, 0.02, 0.1, 0.5, 0.9, 0.99):
            out[f"{fmt.lower()}_truncated_{frac}"] = truncated(good, frac)
        for i in range(per_format):
            out[f"{fmt.lower()}_bitflip_{i}"] = bitflipped(good, rng, flips=rng.choice((1, 4, 32)))
            head = bytearray(good)
            j = rng.randrange(min(len(head), 64))
            head[j] ^= 0xFF
            out[f"{fmt.lower()}_headerflip_{i}"] = bytes(head)
    return out
