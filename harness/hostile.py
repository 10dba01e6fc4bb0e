"""Hostile HTTP input for the service: a generated corpus, a raw-socket client and a judge.

Shared by the CI fuzz slice (tests/proof/test_proof_fuzz.py) and the long run
(benchmarks/fuzz_long.py). Nothing here is random unless given an RNG with a
seed; nothing touches the network beyond the loopback port it is given.

A request is built as raw bytes (request line, headers, body) and sent on a
plain socket, so malformed multipart, lying Content-Length/Content-Type and
HTTP-level garbage reach the server exactly as written.
"""
from __future__ import annotations

import http.client
import io
import json
import random
import socket
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from app.errors import ERRORS
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


# ---------------------------------------------------------------- HTTP
CRLF = b"\r\n"


def multipart(parts, boundary: bytes = b"proofBoundary7MA4YWxkTrZu0gW") -> tuple[str, bytes]:
    """parts: (name, filename or None, content type or None, data). -> (Content-Type, body)."""
    body = b""
    for name, filename, ctype, data in parts:
        disp = b'Content-Disposition: form-data; name="' + _b(name) + b'"'
        if filename is not None:
            disp += b'; filename="' + _b(filename) + b'"'
        body += b"--" + boundary + CRLF + disp + CRLF
        if ctype is not None:
            body += b"Content-Type: " + _b(ctype) + CRLF
        body += CRLF + data + CRLF
    body += b"--" + boundary + b"--" + CRLF
    return "multipart/form-data; boundary=" + boundary.decode("latin-1"), body


def _b(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def http_request(method: str, path: str, headers=(), body: bytes = b"",
                 content_length: bool | int = True) -> bytes:
    """Raw HTTP/1.1 request bytes. content_length: True (the real length), False (none) or a lie."""
    lines = [f"{method} {path} HTTP/1.1".encode("latin-1"), b"Host: 127.0.0.1"]
    for key, value in headers:
        lines.append(_b(key) + b": " + _b(value))
    if content_length is True:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    elif content_length is not False:
        lines.append(b"Content-Length: " + str(content_length).encode())
    return CRLF.join(lines) + CRLF + CRLF + body


def upload(path: str, data: bytes, filename="upload.bin", ctype="application/octet-stream",
           extra_headers=()) -> bytes:
    content_type, body = multipart([("file", filename, ctype, data)])
    return http_request("POST", path, [("Content-Type", content_type), *extra_headers], body)


def raw_upload(data: bytes, ctype: str) -> bytes:
    return http_request("POST", "/predict", [("Content-Type", ctype)], data)


@dataclass
class Outcome:
    status: int | None = None          # None: no HTTP response came back
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    error: str = ""                    # why no response (reset, timeout, ...)
    seconds: float = 0.0


def send(port: int, raw: bytes, timeout: float = 30.0, chunk: int = 65536,
         pause: float = 0.0, host: str = "127.0.0.1") -> Outcome:
    """Send raw request bytes and read one response. A server that answers before reading the
    whole body (413) may reset the connection: the response is still read if it arrived."""
    start = time.monotonic()
    sock = socket.create_connection((host, port), timeout=timeout)
    error = ""
    try:
        try:
            for i in range(0, len(raw), chunk):
                sock.sendall(raw[i:i + chunk])
                if pause:
                    time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError) as exc:
            error = f"send: {type(exc).__name__}"
        except TimeoutError:
            error = "send: timeout"
        out = read_response(sock, timeout=max(0.05, start + timeout - time.monotonic()))
    finally:
        sock.close()
    out.error = "; ".join(e for e in (error, out.error) if e)
    out.seconds = time.monotonic() - start
    return out


def read_response(sock: socket.socket, timeout: float) -> Outcome:
    """One HTTP response from `sock`, parsed by http.client (lengths, chunking, close)."""
    out = Outcome()
    sock.settimeout(timeout)
    response = http.client.HTTPResponse(sock)
    try:
        response.begin()
        out.status = response.status
        out.headers = {k.lower(): v for k, v in response.getheaders()}
        out.body = response.read()
    except TimeoutError:
        out.error = "read: timeout"
    except http.client.IncompleteRead as exc:
        out.body, out.error = exc.partial, "read: incomplete body"
    except http.client.RemoteDisconnected:
        out.error = "closed without a response"
    except (http.client.HTTPException, ConnectionError) as exc:
        out.error = f"read: {type(exc).__name__}"
    finally:
        response.close()
    return out


# ---------------------------------------------------------------- judging
# expect: "ok" (200 with a prediction), "error" (a 4xx JSON error), "any" (200 or a 4xx JSON
# error), "http" (any 4xx, even gunicorn's own non-JSON answer to malformed HTTP), "reject"
# (a 4xx, or the connection closed without an answer: for requests that lie about their length).
@dataclass
class Case:
    name: str
    raw: bytes
    expect: str = "any"
    api: bool = True                   # /predict (JSON) or the HTML form at /
    codes: tuple = ()                  # acceptable error codes when expect == "error"
    timeout: float = 30.0


def judge(case: Case, out: Outcome) -> list[str]:
    """What is wrong with this response to this case; [] when it is acceptable."""
    problems = []
    status = out.status
    if status is None:
        if case.expect == "reject":
            return []
        return [f"no response ({out.error})"]
    if status >= 500:
        return [f"{status} server error: {out.body[:200]!r}"]
    if case.expect == "ok" and status != 200:
        problems.append(f"expected 200, got {status} {out.body[:200]!r}")
    if case.expect == "error" and status == 200:
        problems.append("expected a 4xx error, got 200")
    if not (status == 200 or 400 <= status < 500):
        problems.append(f"unexpected status {status}")
    if case.expect in ("http", "reject"):
        return problems
    ctype = out.headers.get("content-type", "")
    if not case.api:
        if "text/html" not in ctype:
            problems.append(f"form answered {status} with Content-Type {ctype!r}, not HTML")
        return problems
    try:
        doc = json.loads(out.body)
    except ValueError:
        return problems + [f"{status} with a non-JSON body {out.body[:120]!r}"]
    if status == 200:
        problems += check_prediction(doc)
    else:
        err = doc.get("error") if isinstance(doc, dict) else None
        if not (isinstance(err, dict) and isinstance(err.get("code"), str)
                and isinstance(err.get("message"), str) and err["message"]):
            problems.append(f"{status} without {{'error': {{'code', 'message'}}}}: {doc!r:.200}")
        else:
            code = err["code"]
            if code not in ERRORS:
                problems.append(f"code {code!r} is not in the API's error table")
            elif ERRORS[code] != status:
                problems.append(f"code {code} came with status {status}, not {ERRORS[code]}")
            if case.codes and code not in case.codes:
                problems.append(f"code {code}, expected one of {case.codes}")
    return problems


def check_prediction(doc) -> list[str]:
    if isinstance(doc, dict) and "predictions" in doc:
        return [p for item in doc["predictions"] for p in check_prediction(item)]
    try:
        probs = doc["probabilities"]
        ok = (isinstance(doc["label"], str) and isinstance(doc["index"], int)
              and abs(sum(probs.values()) - 1) <= 1e-5
              and doc["label"] == list(probs)[doc["index"]]
              and abs(probs[doc["label"]] - doc["confidence"]) <= 1e-6)
    except (KeyError, TypeError, IndexError, AttributeError):
        ok = False
    return [] if ok else [f"malformed prediction {doc!r:.200}"]


def error_code(out: Outcome) -> str | None:
    try:
        return json.loads(out.body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class Tally:
    """Counts over a campaign, for the assertions and for the Reliability table."""
    cases: int = 0
    statuses: Counter = field(default_factory=Counter)
    codes: Counter = field(default_factory=Counter)
    server_errors: int = 0
    no_response: int = 0
    problems: list = field(default_factory=list)

    def add(self, case: Case, out: Outcome) -> list[str]:
        self.cases += 1
        self.statuses[out.status] += 1
        if out.status is None:
            self.no_response += 1
        elif out.status >= 500:
            self.server_errors += 1
        code = error_code(out) if case.api else None
        if code:
            self.codes[code] += 1
        found = judge(case, out)
        if found:
            self.problems.append(f"{case.name} -> {'; '.join(found)}")
        return found


def run_cases(port: int, cases, tally: Tally | None = None) -> Tally:
    tally = tally or Tally()
    for case in cases:
        tally.add(case, send(port, case.raw, timeout=case.timeout))
    return tally


# ---------------------------------------------------------------- the corpus
def file_cases(name: str, data: bytes, expect: str, codes=()) -> list[Case]:
    """One file sent every way: multipart to /predict, multipart to the form, raw body."""
    cases = [
        Case(f"{name}/multipart", upload("/predict", data, f"{name}.bin"), expect, codes=codes),
        Case(f"{name}/form", upload("/", data, f"{name}.bin"), expect, api=False),
    ]
    if data:
        cases.append(Case(f"{name}/raw", raw_upload(data, "image/png"), expect, codes=codes))
    return cases


def lying_type_cases(png: bytes, jpeg: bytes) -> list[Case]:
    cases = []
    for ctype in ("image/jpeg", "image/gif", "text/plain", "application/json",
                  "application/octet-stream", "image/svg+xml", "IMAGE/PNG", "image/*",
                  "image/png; charset=utf-8", "////", "", "image/png\x00text/html"):
        # A NUL in a header is malformed HTTP: gunicorn answers it with its own 400.
        level = "http" if "\x00" in ctype else "any"
        cases.append(Case(f"multipart_png_as_{ctype!r}",
                          upload("/predict", png, "x.png", ctype or None), "any"))
        cases.append(Case(f"raw_png_as_{ctype!r}", raw_upload(png, ctype), level))
    for ctype in ("text/plain", "application/json", "application/x-www-form-urlencoded",
                  "multipart/mixed; boundary=zz", "application/xml"):
        cases.append(Case(f"raw_png_as_{ctype}", raw_upload(png, ctype), "error"))
    cases.append(Case("raw_png_no_content_type",
                      http_request("POST", "/predict", [], png), "any"))
    cases.append(Case("raw_jpeg_named_png", raw_upload(jpeg, "image/png"), "ok"))
    cases.append(Case("multipart_jpeg_named_gif",
                      upload("/predict", jpeg, "photo.gif", "image/gif"), "ok"))
    return cases


def multipart_cases(png: bytes) -> list[Case]:
    ok_type, ok_body = multipart([("file", "a.png", "image/png", png)])
    bnd = ok_type.split("boundary=")[1].encode()
    cases = []

    def add(name, ctype, body, expect="error", api_and_form=True, **kw):
        headers = [("Content-Type", ctype)] if ctype is not None else []
        cases.append(Case(f"mp_{name}", http_request("POST", "/predict", headers, body, **kw),
                          expect))
        if api_and_form:
            cases.append(Case(f"mp_{name}/form", http_request("POST", "/", headers, body, **kw),
                              expect, api=False))

    add("control_ok", ok_type, ok_body, "ok")
    add("wrong_boundary", "multipart/form-data; boundary=NotTheBoundary", ok_body)
    add("no_boundary_param", "multipart/form-data", ok_body)
    add("empty_boundary", "multipart/form-data; boundary=", ok_body)
    add("boundary_5000", "multipart/form-data; boundary=" + "b" * 5000, ok_body)
    add("quoted_boundary", f'multipart/form-data; boundary="{bnd.decode()}"', ok_body, "any")
    add("unterminated", ok_type, ok_body[:-(len(bnd) + 6)])
    add("cut_in_headers", ok_type, ok_body[:30])
    add("cut_in_data", ok_type, ok_body[:len(ok_body) // 2])
    add("only_preamble", ok_type, b"preamble without any boundary\r\n")
    add("empty_body", ok_type, b"")
    add("lf_only", ok_type, ok_body.replace(b"\r\n", b"\n"), "any")
    add("no_disposition", ok_type,
        b"--" + bnd + b"\r\nContent-Type: image/png\r\n\r\n" + png + b"\r\n--" + bnd + b"--\r\n")
    add("disposition_no_name", ok_type,
        b"--" + bnd + b'\r\nContent-Disposition: form-data; filename="a.png"\r\n\r\n' + png +
        b"\r\n--" + bnd + b"--\r\n")
    add("no_header_separator", ok_type,
        b"--" + bnd + b'\r\nContent-Disposition: form-data; name="file"; filename="a.png"' + png +
        b"\r\n--" + bnd + b"--\r\n")
    add("header_100k", ok_type,
        b"--" + bnd + b"\r\nX-Junk: " + b"j" * 100_000 +
        b'\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + png +
        b"\r\n--" + bnd + b"--\r\n", "any")
    for label, filename in (("traversal", "../../../../etc/passwd"), ("nul", "a\x00.png"),
                            ("long", "x" * 20_000 + ".png"), ("unicode", "фото 📷.png"),
                            ("empty", ""), ("quote", 'a".png'), ("crlf", "a\r\nX-Evil: 1.png")):
        t, b = multipart([("file", filename, "image/png", png)])
        add(f"filename_{label}", t, b, "any")
    t, b = multipart([("file", "a.png", "image/png", png)])
    add("filename_latin1_bytes", t, b.replace(b'filename="a.png"', b'filename="\xff\xfe.png"'),
        "any")
    t, b = multipart([("file", None, None, png)])
    add("field_not_file", t, b, "any")
    t, b = multipart([("image", "a.png", "image/png", png)])
    add("wrong_field_name", t, b)
    t, b = multipart([("file", "a.png", "image/png", b"")])
    add("empty_file_part", t, b)
    t, b = multipart([("file", "a.png", "image/png", png), ("file", "b.txt", "text/plain", b"no")])
    add("batch_good_and_bad", t, b, "any")
    add("body_is_json", ok_type, b'{"file": "a.png"}')
    add("urlencoded", "application/x-www-form-urlencoded", b"file=" + b"%89PNG" * 10)
    add("length_shorter_than_body", ok_type, ok_body, "any", content_length=len(ok_body) // 2)
    add("length_negative", ok_type, ok_body, "http", content_length=-1)
    add("length_not_a_number", ok_type, ok_body, "http", content_length="12abc")
    # The body is shorter than declared: the server waits for the rest; we close after 2 s.
    cases.append(Case("mp_length_longer_than_body",
                      http_request("POST", "/predict", [("Content-Type", ok_type)], ok_body,
                                   content_length=len(ok_body) + 1000),
                      "reject", timeout=2.0))
    chunked = _chunked(ok_body, 100)
    cases.append(Case("mp_chunked", http_request(
        "POST", "/predict", [("Content-Type", ok_type), ("Transfer-Encoding", "chunked")],
        chunked, content_length=False), "any"))
    cases.append(Case("mp_chunked_bad_size", http_request(
        "POST", "/predict", [("Content-Type", ok_type), ("Transfer-Encoding", "chunked")],
        b"zz\r\n" + ok_body + b"\r\n0\r\n\r\n", content_length=False), "http"))
    cases.append(Case("mp_chunked_and_length", http_request(
        "POST", "/predict", [("Content-Type", ok_type), ("Transfer-Encoding", "chunked")],
        chunked, content_length=len(chunked)), "http"))
    return cases


def volume_cases(png: bytes, max_upload_mb: float, max_batch: int) -> list[Case]:
    """Thousands of fields, too many files, bodies over MAX_UPLOAD_MB (sized from the test's env)."""
    cases = []
    many = [(f"field{i}", None, None, b"v") for i in range(5000)] + [("file", "a.png", None, png)]
    t, b = multipart(many)
    cases += [Case("fields_5000", http_request("POST", "/predict", [("Content-Type", t)], b),
                   "any"),
              Case("fields_5000/form", http_request("POST", "/", [("Content-Type", t)], b),
                   "any", api=False)]
    t, b = multipart([("file", f"{i}.png", "image/png", png) for i in range(max_batch + 1)])
    cases.append(Case("files_over_max_batch",
                      http_request("POST", "/predict", [("Content-Type", t)], b), "error"))
    t, b = multipart([("file", f"{i}.png", "image/png", png) for i in range(2000)])
    if len(b) < max_upload_mb * 2**20:
        cases.append(Case("files_2000", http_request("POST", "/predict", [("Content-Type", t)], b),
                          "error"))
    t, b = multipart([("file", f"{i}.png", "image/png", png) for i in range(max_batch)])
    cases.append(Case("files_max_batch", http_request("POST", "/predict",
                                                      [("Content-Type", t)], b), "ok"))
    big = int(max_upload_mb * 2**20 * 1.5)
    noise = image_bytes("BMP", (max(1, int((big / 3) ** 0.5)), max(1, int((big / 3) ** 0.5))))
    too_big = ("payload_too_large",)
    mp_type, mp_body = multipart([("file", "big.bmp", "image/bmp", noise)])
    cases += [
        Case("oversize_multipart", upload("/predict", noise, "big.bmp", "image/bmp"), "error",
             codes=too_big),
        Case("oversize_multipart/form", upload("/", noise, "big.bmp", "image/bmp"), "error",
             api=False),
        Case("oversize_raw", raw_upload(noise, "image/bmp"), "error", codes=too_big),
        Case("oversize_chunked", http_request(
            "POST", "/predict", [("Content-Type", "image/bmp"), ("Transfer-Encoding", "chunked")],
            _chunked(noise), content_length=False), "error", codes=too_big),
        Case("oversize_chunked_multipart", http_request(
            "POST", "/predict", [("Content-Type", mp_type), ("Transfer-Encoding", "chunked")],
            _chunked(mp_body), content_length=False), "error", codes=too_big),
        Case("oversize_declared_only", http_request(
            "POST", "/predict", [("Content-Type", "image/png")], b"", content_length=2**40),
            "reject", timeout=2.0),
        Case("query_10000_params", http_request(
            "POST", "/predict?" + "&".join(f"k{i}=v" for i in range(1000)),
            [("Content-Type", "image/png")], png), "http"),
    ]
    return cases


def _chunked(body: bytes, size: int = 65536) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                    for i in range(0, len(body), size)) + b"0\r\n\r\n"


def http_level_cases(png: bytes) -> list[Case]:
    """Garbage at the HTTP layer: gunicorn may answer with its own (non-JSON) 4xx."""
    return [
        Case("http_garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100 +
             b"\r\n\r\n", "reject", timeout=3.0),
        Case("http_bad_method", b"FOO\x00 /predict HTTP/1.1\r\nHost: x\r\n\r\n", "http"),
        Case("http_150_headers", http_request(
            "POST", "/predict", [(f"X-H{i}", "v") for i in range(150)] +
            [("Content-Type", "image/png")], png), "http"),
        Case("http_header_20k", http_request(
            "POST", "/predict", [("X-Big", "v" * 20_000), ("Content-Type", "image/png")], png),
            "http"),
        Case("http_url_20k", http_request("GET", "/" + "a" * 20_000), "http"),
        Case("http_version_9", b"GET /\r\n\r\n", "reject", timeout=3.0),
        Case("http_get_predict", http_request("GET", "/predict"), "error"),
        Case("http_put_predict", http_request("PUT", "/predict", [("Content-Type", "image/png")],
                                              png), "error"),
        Case("http_delete_root", http_request("DELETE", "/"), "http"),
        Case("http_not_found", http_request("GET", "/no/such/page"), "http"),
        Case("http_traversal", http_request("GET", "/static/../../../../etc/passwd"), "http"),
    ]


def corpus(max_upload_mb: float = 1.0, max_batch: int = 32, seed: int = 0,
           mutants_per_format: int = 3) -> list[Case]:
    """The whole generated corpus, deterministic for a seed."""
    rng = random.Random(seed)
    cases = []
    for name, data in valid_images().items():
        if len(data) < max_upload_mb * 2**20 * 0.9:
            cases += file_cases(name, data, "ok")
    for name, data in other_formats().items():
        cases += file_cases(name, data, "any")
    for name, data in bombs().items():
        cases += file_cases(name, data, "error", codes=("image_too_large", "invalid_image"))
    for width, height in ((50_000, 50_000), (20_000, 20_000), (2**32 - 1, 2**32 - 1)):
        for name, data in heif_avif_declaring(width, height).items():
            cases += file_cases(name, data, "error", codes=("image_too_large", "invalid_image"))
    for name, data in junk().items():
        cases += file_cases(name, data, "error",
                            codes=("invalid_image", "missing_file", "unsupported_media_type"))
    for name, data in mutants(rng, mutants_per_format).items():
        cases += file_cases(name, data, "any")
    png, jpeg = image_bytes("PNG"), image_bytes("JPEG")
    cases += lying_type_cases(png, jpeg)
    cases += multipart_cases(png)
    cases += volume_cases(png, max_upload_mb, max_batch)
    cases += http_level_cases(png)
    return cases


def random_case(rng: random.Random, max_upload_mb: float = 1.0) -> Case:
    """One random hostile request, for the long run: a mutated valid file or random bytes,
    sent as multipart to /predict or the form, or as a raw body with a random type."""
    kind = rng.random()
    if kind < 0.2:
        data = bytes(rng.getrandbits(8) for _ in range(rng.choice((0, 1, 16, 512, 8192))))
    else:
        fmt = rng.choice(FORMATS)
        size = (rng.randint(1, 300), rng.randint(1, 300))
        mode = rng.choice(("RGB", "L", "RGBA", "P")) if fmt in ("PNG", "WEBP", "TIFF") else "RGB"
        data = image_bytes(fmt, size, mode=mode, seed=rng.randrange(10**6))
        roll = rng.random()
        if roll < 0.35:
            data = truncated(data, rng.random())
        elif roll < 0.8:
            data = bitflipped(data, rng, flips=rng.choice((1, 2, 8, 64)))
    route = rng.random()
    if route < 0.45:
        return Case("random/multipart", upload("/predict", data, "r.bin"), "any")
    if route < 0.7:
        return Case("random/form", upload("/", data, "r.bin"), "any", api=False)
    ctype = rng.choice(("image/png", "image/jpeg", "image/webp", "application/octet-stream",
                        "text/plain", "image/x-unknown"))
    return Case("random/raw", raw_upload(data, ctype), "any") if data else \
        Case("random/raw-empty", raw_upload(data, ctype), "error")
