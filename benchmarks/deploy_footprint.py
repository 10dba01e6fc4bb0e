"""What a fly.io machine needs: memory under load and seconds to /readyz, with fly.toml's settings.

    .venv/bin/python benchmarks/deploy_footprint.py [--starts 3] [--duration 20]

Serves a resnet18 at 224 px (built as in serve_bench.py) with the [env] of
fly.toml (WEB_CONCURRENCY, THREADS), drives /predict with fly's hard_limit
concurrent clients, and prints the peak memory of all server processes
together (PSS: shared preloaded pages counted once, as the kernel charges
them; RSS summed for comparison) and the time from process start to /readyz 200.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serve_bench import build_assets, drive  # noqa: E402
from harness.servers import GunicornServer, MemoryWatch, fly_config, fly_env  # noqa: E402

MB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3, help="cold starts to time")
    parser.add_argument("--duration", type=float, default=20, help="seconds of load")
    args = parser.parse_args()

    fly = fly_config()
    env = fly_env()
    clients = fly["http_service"]["concurrency"]["hard_limit"]
    budget_mb = int(fly["vm"][0]["memory"].removesuffix("gb")) * 1024
    workdir = Path(tempfile.mkdtemp(prefix="footprint-"))
    model, images = build_assets(workdir, 224, 16)

    ready_seconds = []
    for _ in range(args.starts):
        server = GunicornServer(model, env=env)
        began = time.monotonic()
        server.start()
        ready_seconds.append(time.monotonic() - began)
        server.stop()

    with GunicornServer(model, env=env) as server:
        idle_pss = server.pss_bytes()
        watch = MemoryWatch(server)
        latencies, failed = drive(server.url, images, clients, args.duration)
        watch.stop()
        peak_pss = max(watch.peak_pss, server.pss_bytes())

    print(f"settings: {env}, {clients} concurrent clients, resnet18 224 px, 640x480 JPEGs")
    print(f"start to /readyz: median {statistics.median(ready_seconds):.1f} s "
          f"(runs: {', '.join(f'{s:.1f}' for s in ready_seconds)})")
    print(f"requests: {len(latencies)} ok, {failed} failed, "
          f"{len(latencies) / args.duration:.1f} req/s")
    print(f"memory, all server processes: idle PSS {idle_pss / MB:.0f} MB, peak PSS "
          f"{peak_pss / MB:.0f} MB, peak RSS summed {watch.peak_rss / MB:.0f} MB")
    print(f"headroom on a {budget_mb} MB machine: {100 * (1 - peak_pss / MB / budget_mb):.0f} %")


if __name__ == "__main__":
    main()
