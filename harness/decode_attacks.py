"""Small files that make a decoder amplify: work or memory out of proportion to their size.

Each is valid enough for Pillow to open; before classifier/decode_guard.py each cost a
server hundreds of MB or seconds of CPU (docs/reliability.md, "Decoding in bounded memory
and time"). Shared by tests/images/test_decode_guard.py, the memory suite
(tests/memory/) and benchmarks/decode_attacks.py. Every builder is deterministic.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from harness.images import image_bytes


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(ihdr: bytes, idat: bytes, before: bytes = b"", plte: bytes = b"") -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + before
            + (_chunk(b"PLTE", plte) if plte else b"") + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def _zeros(rows: int, row_bytes: int) -> bytes:
    """zlib of `rows` PNG scanlines of zeros (filter byte 0), compressed level 9."""
    comp = zlib.compressobj(9)
    row = bytes(row_bytes + 1)
    return b"".join(comp.compress(row) for _ in range(rows)) + comp.flush()


def tiff_many_strips(strips: int = 2_000_000) -> bytes:
    """A 1x2 grayscale TIFF with `strips` strip offsets (2 bytes each): Pillow makes one
    tile object per strip inside Image.open (the issue's 4 MB file: 537 MB, 10 s)."""
    array_at = 8 + 2 + 12 * 9 + 4
    entries = [(256, 3, 1, 1), (257, 3, 1, 2), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 3, strips, array_at), (277, 3, 1, 1), (278, 3, 1, 1),
               (279, 3, strips, array_at)]
    out = bytearray(b"II*\x00" + struct.pack("<IH", 8, len(entries)))
    for tag, typ, count, value in entries:
        inline = count == 1
        out += struct.pack("<HHI", tag, typ, count) + (
            struct.pack("<HH", value, 0) if inline else struct.pack("<I", value))
    out += struct.pack("<I", 0)
    out += struct.pack("<H", 1) * strips  # every strip: 1 byte at offset 1
    return bytes(out)


def jpeg_many_markers(markers: int = 5_000_000) -> bytes:
    """An 8x8 JPEG with `markers` empty APP1 segments before its frame (20 MB for 5 M):
    Pillow keeps one list entry per segment (the issue's file: 704 MB, 6.4 s)."""
    good = image_bytes("JPEG", (8, 8))
    return good[:2] + b"\xff\xe1\x00\x02" * markers + good[2:]


def png_palette_one_colour(side: int = 6320) -> bytes:
    """A 1-bit palette PNG of side x side pixels of one colour: 5 KB that decode to 40 MP,
    converted at full size before they were reduced (the issue's file: 681 MB)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 3, 0, 0, 0)
    return _png(ihdr, _zeros(side, (side + 7) // 8), plte=b"\x20\x80\xe0\xff\xff\xff")


def png_16bit(side: int = 6320) -> bytes:
    """A 16-bit grayscale PNG of side x side (40 MP at 6320): a smooth ramp, a few MB."""
    ramp = (np.arange(side, dtype=np.uint32) * 65535 // max(1, side - 1)).astype(">u2")
    row = b"\x00" + ramp.tobytes()
    comp = zlib.compressobj(6)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return _png(struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0), idat)


def png_private_chunks(chunks: int = 2_000_000) -> bytes:
    """A 1x1 PNG with `chunks` empty private chunks before IDAT (24 MB): one list entry each."""
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return _png(ihdr, zlib.compress(b"\x00\x00"), before=_chunk(b"prIv", b"") * chunks)


def png_text_chunks(chunks: int = 64) -> bytes:
    """A 1x1 PNG with `chunks` zTXt chunks, each 1 KB inflating to 1 MB of text."""
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    text = b"".join(_chunk(b"zTXt", b"k%d\x00\x00" % i + zlib.compress(b"a" * 1_000_000, 9))
                    for i in range(chunks))
    return _png(ihdr, zlib.compress(b"\x00\x00"), before=text)


def exif_with_big_array(values: int = 8_000_000) -> bytes:
    """A TIFF-structured EXIF block whose one tag holds `values` SHORTs (2 bytes each):
    Pillow's EXIF reader turns them into a tuple of Python ints (36 bytes each)."""
    head = b"II*\x00" + struct.pack("<IH", 8, 1)
    entry = struct.pack("<HHII", 0x0112, 3, values, 8 + 2 + 12 + 4)
    return head + entry + struct.pack("<I", 0) + b"\x01\x00" * values


def png_with_exif(exif: bytes | None = None) -> bytes:
    """A 16x16 PNG carrying `exif` in an eXIf chunk (read when orientation is applied)."""
    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0)
    return _png(ihdr, zlib.compress(bytes(17 * 16)),
                before=_chunk(b"eXIf", exif if exif is not None else exif_with_big_array()))


def jpeg_with_icc(segments: int = 255) -> bytes:
    """An 8x8 JPEG with an ICC profile split over `segments` APP2 segments of 64 KB
    (255 at most in a real file: 16 MB)."""
    good = image_bytes("JPEG", (8, 8))
    body = b"\x00" * 65519
    app2 = b"".join(b"\xff\xe2" + struct.pack(">H", 2 + 14 + len(body)) + b"ICC_PROFILE\x00"
                    + bytes([i % 255 + 1, min(segments, 255)]) + body
                   for i in range(segments))
    return good[:2] + app2 + good[2:]


def jpeg_many_scans(scans: int = 200_000, side: int = 2048) -> bytes:
    """A progressive JPEG of side x side whose DC refinement scan is repeated `scans`
    times: libjpeg walks every block of the image once per scan."""
    good = bytearray(image_bytes("JPEG", (side, side), progressive=True))
    # the last scan of a progressive JPEG is short; repeat the whole last SOS..EOI part
    last = good.rindex(b"\xff\xda")
    return bytes(good[:last]) + bytes(good[last:-2]) * scans + b"\xff\xd9"


def gif_big_canvas(side: int = 6320) -> bytes:
    """A GIF whose logical screen is side x side around one 1x1 frame: Pillow decodes
    the whole screen, in palette mode."""
    gif = bytearray(image_bytes("GIF", (1, 1)))
    gif[6:10] = struct.pack("<HH", side, side)
    return bytes(gif)


def gif_many_frames(frames: int = 400_000) -> bytes:
    """A 1x1 GIF with `frames` frames (about 20 bytes each)."""
    gif = image_bytes("GIF", (1, 1))
    first = gif.index(b"\x2c")  # the first image descriptor
    frame = gif[first:-1]
    return gif[:first] + frame * frames + b"\x3b"


def gif_many_extensions(blocks: int = 2_000_000) -> bytes:
    """A 1x1 GIF with `blocks` empty application extensions before its frame."""
    gif = image_bytes("GIF", (1, 1))
    first = gif.index(b"\x2c")
    return gif[:first] + b"\x21\xfe\x01a\x00" * blocks + gif[first:]


def _riff(chunks: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def _riff_chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")


def _vp8x(width: int, height: int, flags: int) -> bytes:
    return _riff_chunk(b"VP8X", struct.pack("<I", flags) + (width - 1).to_bytes(3, "little")
                       + (height - 1).to_bytes(3, "little"))


def _vp8l_1x1() -> bytes:
    data = image_bytes("WEBP", (1, 1), lossless=True)
    return data[12:]  # the VP8L chunk after RIFF....WEBP


# An ANMF frame header: at (0, 0), 1x1 (sizes stored minus one), 100 ms, no blending flags.
_ANMF_1X1 = bytes(12) + (100).to_bytes(3, "little") + b"\x00"


def webp_big_canvas(side: int = 3160) -> bytes:
    """An animated WebP whose canvas is side x side (10 MP) around one 1x1 frame: libwebp's
    animation decoder (which Pillow uses for every WebP) holds two RGBA canvases."""
    anmf = _riff_chunk(b"ANMF", _ANMF_1X1 + _vp8l_1x1())
    anim = _riff_chunk(b"ANIM", b"\xff\xff\xff\xff\x00\x00")
    return _riff(_vp8x(side, side, 0x02) + anim + anmf)


def webp_many_frames(frames: int = 400_000) -> bytes:
    """A 1x1 animated WebP with `frames` frames."""
    anmf = _riff_chunk(b"ANMF", _ANMF_1X1 + _vp8l_1x1())
    anim = _riff_chunk(b"ANIM", b"\xff\xff\xff\xff\x00\x00")
    return _riff(_vp8x(1, 1, 0x02) + anim + anmf * frames)


def webp_with_exif(exif: bytes | None = None) -> bytes:
    """A 1x1 extended WebP carrying `exif` in its EXIF chunk."""
    blob = exif if exif is not None else exif_with_big_array()
    return _riff(_vp8x(1, 1, 0x08) + _vp8l_1x1() + _riff_chunk(b"EXIF", blob))


def apng_many_frames(frames: int = 300_000) -> bytes:
    """A 1x1 APNG declaring `frames` frames, each with its fcTL and fdAT chunk."""
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixel = zlib.compress(b"\x00\x00")
    parts = [_chunk(b"acTL", struct.pack(">II", frames, 0))]
    seq = 0
    idat = b""
    for i in range(frames):
        fctl = _chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, 1, 1, 0, 0, 1, 10, 0, 0))
        seq += 1
        if i == 0:
            idat = fctl + _chunk(b"IDAT", pixel)
        else:
            parts.append(fctl + _chunk(b"fdAT", struct.pack(">I", seq) + pixel))
            seq += 1
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + parts[0] + idat + b"".join(parts[1:])
            + _chunk(b"IEND", b""))


def bmp_rle4(side: int = 6320) -> bytes:
    """A 4-bit run-length BMP of side x side in runs of 255 pixels: 320 KB that Pillow's
    RLE decoder (Python, one step per pixel) expands to 40 MP."""
    row = b"".join(bytes([min(255, side - x), 0x01]) for x in range(0, side, 255)) + b"\x00\x00"
    body = row * side + b"\x00\x01"
    palette = b"\x20\x80\xe0\x00" * 2
    header = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 4, 2, len(body), 2835, 2835, 2, 0)
    offset = 14 + len(header) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + header + palette + body


def heif_grid(side: int = 4608, tile: int = 512, fmt: str = "HEIF") -> bytes:
    """A one-colour image of side x side (21 MP) saved as a grid of tile x tile coded
    images (as iPhones do): a small file whose every tile is decoded."""
    import pillow_heif

    im = Image.new("RGB", (side, side), (40, 120, 200))
    previous = pillow_heif.options.GRID_TILE_SIZE
    pillow_heif.options.GRID_TILE_SIZE = tile
    try:
        buf = io.BytesIO()
        pillow_heif.from_pillow(im).save(buf, format=fmt, quality=10)
    finally:
        pillow_heif.options.GRID_TILE_SIZE = previous
    return buf.getvalue()


def avif_big(side: int = 3648) -> bytes:
    """A one-colour side x side AVIF: a few KB that libavif decodes to 13 MP."""
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (40, 120, 200)).save(buf, "AVIF", quality=10, speed=10)
    return buf.getvalue()


def refused_structures() -> dict[str, bytes]:
    """Small versions (under 1 MB, the fuzz server's upload limit) of the files whose
    structure alone is refused: a row of the hostile corpus (harness.hostile_cases)."""
    return {
        "amplify_tiff_strips": tiff_many_strips(10_000),
        "amplify_jpeg_segments": jpeg_many_markers(5_000),
        "amplify_jpeg_scans": jpeg_many_scans(200, side=64),
        "amplify_png_chunks": png_private_chunks(5_000),
        "amplify_png_text": png_text_chunks(20),
        "amplify_apng_frames": apng_many_frames(4_200),
        "amplify_gif_extensions": gif_many_extensions(5_000),
        "amplify_webp_frames": webp_many_frames(5_000),
    }


# name -> builder. The three of issue 19 first, then one per remaining accepted format.
ATTACKS = {
    "tiff_2m_strips": tiff_many_strips,
    "jpeg_5m_app1": jpeg_many_markers,
    "png_palette_40mp": png_palette_one_colour,
    "png_16bit_40mp": png_16bit,
    "png_2m_private_chunks": png_private_chunks,
    "png_64mb_text": png_text_chunks,
    "png_exif_8m_shorts": png_with_exif,
    "apng_300k_frames": apng_many_frames,
    "jpeg_icc_16mb": jpeg_with_icc,
    "gif_canvas_40mp": gif_big_canvas,
    "gif_400k_frames": gif_many_frames,
    "gif_2m_extensions": gif_many_extensions,
    "webp_canvas_10mp": webp_big_canvas,
    "webp_400k_frames": webp_many_frames,
    "webp_exif_8m_shorts": webp_with_exif,
    "bmp_rle4_40mp": bmp_rle4,
    "heic_grid_21mp": heif_grid,
    "avif_13mp": avif_big,
}
