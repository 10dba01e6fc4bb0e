"""The upload form over a slow mobile uplink: click to result, with and without the browser's shrink.

    .venv/bin/python -m benchmarks.form_slow_link [--kbps 100] [--latency-ms 100] [--rounds 2]
        [--model benchmarks/results/serve/export.pkl]

Serves the model with the production command (harness/servers.py), opens the form in
Debian's Chromium (Playwright), throttles the page's uplink with Chrome DevTools' network
emulation, submits one 12 MP phone JPEG (4032x3024, EXIF orientation 6: serve_bench's
phone photo, harness/bench_assets.py) and times click to result; the form as served (it shrinks the photo before
sending) alternates with the same form without `createImageBitmap` (it sends the file as
it is). Prints each run with the page's status line, and the load average before and after.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import ROOT
from harness.bench_assets import build_assets, phone_photo
from harness.browser import page_opener
from harness.machine import load_average, machine_line
from harness.servers import GunicornServer


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kbps", type=float, default=100, help="uplink, KB/s")
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", help="an export.pkl (default: serve_bench's resnet18)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    workdir = Path(tempfile.mkdtemp(prefix="form-slow-link-"))
    model = Path(args.model) if args.model else build_assets(
        ROOT / "benchmarks" / "results" / "serve", 224, 0, ())[0]
    photo = phone_photo(np.random.default_rng(0))
    path = workdir / "IMG_0001.jpg"
    photo.save(path, "JPEG", quality=90, exif=photo.info["exif"])
    print(f"start: {machine_line()}; photo {path.stat().st_size / 2**20:.1f} MB; uplink "
          f"{args.kbps:g} KB/s, latency {args.latency_ms:g} ms", flush=True)
    server = GunicornServer(model).start()
    try:
        with sync_playwright() as playwright, page_opener(playwright, server.url, 600_000) as open_:
            for _ in range(args.rounds):
                for shrink in (True, False):
                    page = open_()
                    if not shrink:
                        page.add_init_script("window.createImageBitmap = undefined")
                        page.goto(server.url + "/")
                    cdp = page.context.new_cdp_session(page)
                    cdp.send("Network.enable")
                    cdp.send("Network.emulateNetworkConditions", {
                        "offline": False, "latency": args.latency_ms,
                        "downloadThroughput": 10 * args.kbps * 1024,
                        "uploadThroughput": args.kbps * 1024})
                    page.set_input_files("#file", str(path))
                    start = time.monotonic()
                    page.click("#submit")
                    page.locator("#result").wait_for(state="visible")
                    print(f"{'shrunk in the browser' if shrink else 'sent as it is':22s} "
                          f"{time.monotonic() - start:6.1f} s  {page.text_content('#status')}",
                          flush=True)
    finally:
        server.terminate()
        os.unlink(path)
    print(f"end: {load_average()}")


if __name__ == "__main__":
    main()
