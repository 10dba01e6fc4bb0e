"""The hostile-input corpus: every hostile file and request, as cases for the judge.

Shared by the CI fuzz slice (tests/proof/test_proof_fuzz.py) and the long run
(`python -m benchmarks.fuzz_long`). Deterministic for a seed; `random_case` draws one
request for the long run's random phase.
"""
from __future__ import annotations

import random

from harness.decode_attacks import refused_structures
from harness.hostile_images import (
    bitflipped,
    bombs,
    heif_avif_declaring,
    junk,
    mutants,
    other_formats,
    valid_images,
)
from harness.images import FORMATS, image_bytes, truncated
from harness.judge import Case
from harness.raw_http import chunked, http_request, multipart, raw_upload, upload


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
    chunked_body = chunked(ok_body, 100)
    cases.append(Case("mp_chunked", http_request(
        "POST", "/predict", [("Content-Type", ok_type), ("Transfer-Encoding", "chunked")],
        chunked_body, content_length=False), "any"))
    cases.append(Case("mp_chunked_bad_size", http_request(
        "POST", "/predict", [("Content-Type", ok_type), ("Transfer-Encoding", "chunked")],
        b"zz\r\n" + ok_body + b"\r\n0\r\n\r\n", content_length=False), "http"))
    cases.append(Case("mp_chunked_and_length", http_request(
        "POST", "/predict", [("Content-Type", ok_type), ("Transfer-Encoding", "chunked")],
        chunked_body, content_length=len(chunked_body)), "http"))
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
            chunked(noise), content_length=False), "error", codes=too_big),
        Case("oversize_chunked_multipart", http_request(
            "POST", "/predict", [("Content-Type", mp_type), ("Transfer-Encoding", "chunked")],
            chunked(mp_body), content_length=False), "error", codes=too_big),
        Case("oversize_declared_only", http_request(
            "POST", "/predict", [("Content-Type", "image/png")], b"", content_length=2**40),
            "reject", timeout=2.0),
        Case("query_10000_params", http_request(
            "POST", "/predict?" + "&".join(f"k{i}=v" for i in range(1000)),
            [("Content-Type", "image/png")], png), "http"),
    ]
    return cases


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


TOO_LARGE_OR_INVALID = ("image_too_large", "invalid_image")


def file_families(rng: random.Random, mutants_per_format: int) -> list[tuple[dict, str, tuple]]:
    """Every family of hostile files with what the service must answer them: (files, expect,
    acceptable error codes). A new family is a function in hostile_images.py and a row here."""
    return [
        (valid_images(), "ok", ()),
        (other_formats(), "any", ()),
        (bombs(), "error", TOO_LARGE_OR_INVALID),
        *((heif_avif_declaring(width, height), "error", TOO_LARGE_OR_INVALID)
          for width, height in ((50_000, 50_000), (20_000, 20_000), (2**32 - 1, 2**32 - 1))),
        (junk(), "error", ("invalid_image", "missing_file", "unsupported_media_type")),
        (refused_structures(), "error", TOO_LARGE_OR_INVALID),
        (mutants(rng, mutants_per_format), "any", ()),
    ]


def corpus(max_upload_mb: float = 1.0, max_batch: int = 32, seed: int = 0,
           mutants_per_format: int = 3) -> list[Case]:
    """The whole generated corpus, deterministic for a seed."""
    cases = []
    for files, expect, codes in file_families(random.Random(seed), mutants_per_format):
        for name, data in files.items():
            if expect != "ok" or len(data) < max_upload_mb * 2**20 * 0.9:  # else a 413
                cases += file_cases(name, data, expect, codes=codes)
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
