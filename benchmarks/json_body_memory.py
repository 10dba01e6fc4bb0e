"""Peak memory of reading one JSON body of base64 into image bytes (app/json_uploads.py).

    python -m benchmarks.json_body_memory [--mb 40]

In this fresh process: a body of `--mb` MB of image bytes in base64 is written to a file,
read by `uploads_from_json` through a Flask request as the server reads a socket, and the
peak RSS above the process's RSS before the read is printed (VmHWM, reset through
/proc/self/clear_refs; Linux). app/body_budget.py's JSON_WEIGHT rests on this figure.
"""
from __future__ import annotations

import argparse
import base64
import gc
import os
import tempfile
import time
from pathlib import Path

from flask import Flask

from app.json_uploads import uploads_from_json

MB = 2**20
CHUNK = 3 * MB  # a multiple of 3: base64 of each chunk joins without padding


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def write_body(path: Path, image_mb: float) -> int:
    """A JSON body {"image": "<base64 of image_mb MB>"} at `path`; its size in bytes."""
    left = int(image_mb * MB)
    with path.open("wb") as out:
        out.write(b'{"image": "')
        while left > 0:
            out.write(base64.b64encode(os.urandom(min(CHUNK, left))))
            left -= CHUNK
        out.write(b'"}')
    return path.stat().st_size


def measure(image_mb: float) -> tuple[int, int, float]:
    """(body bytes, peak bytes above the RSS before the read, seconds)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "body.json"
        size = write_body(path, image_mb)
        app = Flask(__name__)
        with path.open("rb") as stream, app.test_request_context(
                "/predict", method="POST", input_stream=stream, content_length=size,
                content_type="application/json"):
            gc.collect()
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            before = _status_kb("VmRSS")
            start = time.perf_counter()
            uploads = uploads_from_json(1, int(image_mb * MB) + MB)
            seconds = time.perf_counter() - start
            peak = _status_kb("VmHWM")
            assert len(uploads[0][1]) == int(image_mb * MB)
    return size, (peak - before) * 1024, seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.json_body_memory",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=40.0, help="MB of image bytes (default 40)")
    args = parser.parse_args(argv)
    size, peak, seconds = measure(args.mb)
    print(f"JSON body {size / MB:.1f} MB ({args.mb:g} MB of image): peak {peak / MB:.0f} MB "
          f"above the RSS before ({peak / size:.2f}x the body), {seconds:.2f} s")


if __name__ == "__main__":
    main()
