"""Serving benchmark: our gunicorn service against the tutorial way, same model, images, load.

    .venv/bin/python benchmarks/serve_bench.py [--concurrency 1 4 8] [--duration 20]

1. Builds a resnet18 at 224 px with fastai (vision_learner, pretrained=False:
   weights do not change speed) and exports it, plus realistic 640x480 JPEGs.
2. For each server in turn, started with its own command line:
   - ours: `gunicorn -c gunicorn.conf.py "app:create_app()"` (harness/servers.py),
   - tutorial: `gunicorn tutorial_app:app` in benchmarks/ (one sync worker, gunicorn's
     defaults: what the fastai/fly.io tutorials deploy), calling learn.predict,
   drives POST /predict (multipart `file`) from C client threads for T seconds
   after a warm-up, and records every latency.
3. Prints requests/s, p50/p95/p99 and the ratios; --json writes them too.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.notebook import export_like_a_notebook  # noqa: E402
from harness.servers import GunicornServer, free_port  # noqa: E402


def make_photo(rng, size=(640, 480)) -> Image.Image:
    """A photo-like JPEG source: gradient sky, shapes, blur and sensor noise."""
    w, h = size
    y = np.linspace(0, 1, h)[:, None, None]
    base = (np.array(rng.integers(40, 220, 3)) * (1 - y) + np.array(rng.integers(20, 200, 3)) * y)
    im = Image.fromarray(np.broadcast_to(base, (h, w, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = x0 + rng.integers(20, 300), y0 + rng.integers(20, 200)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    im = im.filter(ImageFilter.GaussianBlur(1.5))
    noisy = np.asarray(im, dtype=np.int16) + rng.normal(0, 6, (h, w, 3)).astype(np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def build_assets(workdir: Path, size: int, n_images: int) -> tuple[Path, list[bytes]]:
    rng = np.random.default_rng(0)
    data = workdir / "data"
    for label in ("cat", "dog", "bird"):
        (data / label).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            make_photo(rng).save(data / label / f"{i}.jpg", quality=90)
    model = workdir / "export.pkl"
    if not model.exists():
        export_like_a_notebook(data, model, size=size, epochs=0, bs=4)
    images = []
    for _ in range(n_images):
        buf = io.BytesIO()
        make_photo(rng).save(buf, "JPEG", quality=90)
        images.append(buf.getvalue())
    return model, images


class TutorialServer:
    """`gunicorn tutorial_app:app` from benchmarks/ (away from our gunicorn.conf.py, which
    gunicorn would otherwise pick up from the working directory): gunicorn's defaults."""

    def __init__(self, model: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, MODEL_PATH=str(model))
        for name in ("WEB_CONCURRENCY", "GUNICORN_CMD_ARGS"):
            env.pop(name, None)
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{self.port}",
             "tutorial_app:app"], cwd=ROOT / "benchmarks", env=env, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, image: bytes, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("tutorial server exited")
            try:
                if post(self.url, image, requests).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.5)
        raise TimeoutError("tutorial server did not answer")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def post(url: str, image: bytes, session) -> requests.Response:
    return session.post(url + "/predict", files={"file": ("photo.jpg", image, "image/jpeg")},
                        timeout=60)


def drive(url: str, images: list[bytes], concurrency: int, duration: float,
          warmup: float = 2.0) -> tuple[list[float], int]:
    """C threads posting images back to back for `duration` s after a warm-up.

    Returns the latencies (s) of the requests started after the warm-up, and failures.
    """
    latencies, failures = [], [0]
    lock = threading.Lock()
    start = time.monotonic()
    measure_from, stop_at = start + warmup, start + warmup + duration

    def client(k: int):
        session = requests.Session()
        i = k
        while True:
            t0 = time.monotonic()
            if t0 >= stop_at:
                return
            try:
                ok = post(url, images[i % len(images)], session).status_code == 200
            except requests.RequestException:
                ok = False
            t1 = time.monotonic()
            i += concurrency
            if t0 >= measure_from:
                with lock:
                    if ok:
                        latencies.append(t1 - t0)
                    else:
                        failures[0] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, failures[0]


def summarise(server: str, concurrency: int, latencies: list[float], failed: int,
              seconds: float) -> dict:
    lat = np.array(latencies) * 1000
    pct = (lambda q: float(np.percentile(lat, q))) if len(lat) else (lambda q: float("nan"))
    return {"server": server, "concurrency": concurrency, "requests": len(latencies),
            "failed": failed, "rps": len(latencies) / seconds,
            "p50": pct(50), "p95": pct(95), "p99": pct(99)}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{len(os.sched_getaffinity(0))} vCPU ({cpu}), {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}")


def run(args) -> list[dict]:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model, images = build_assets(workdir, args.size, args.images)
    rows = []
    env = {"WEB_CONCURRENCY": args.workers, "THREADS": args.threads,
           "INFERENCE_THREADS": args.inference_threads, "INFERENCE_RUNTIME": args.runtime}
    env = {k: str(v) for k, v in env.items() if v is not None}
    if "WEB_CONCURRENCY" not in env or "THREADS" not in env:
        from app.config import load_settings
        defaults = load_settings(environ={})
        env.setdefault("WEB_CONCURRENCY", str(defaults.workers))
        env.setdefault("THREADS", str(defaults.threads))
    ours = GunicornServer(model, env=env)
    servers = {"ours": ours}
    try:
        ours.start()
        if not args.skip_tutorial:
            servers["tutorial"] = TutorialServer(model)
            servers["tutorial"].wait_ready(images[0])
        # Both servers stay up (an idle one costs no CPU) and are driven in alternating
        # rounds, so a neighbour's load on a shared machine falls on both alike.
        per_round = args.duration / args.rounds
        for c in args.concurrency:
            for server in servers.values():
                drive(server.url, images, c, 0, warmup=2.0)  # warm connections and caches
            collected = {name: ([], 0) for name in servers}
            for _ in range(args.rounds):
                for name, server in servers.items():
                    lat, failed = drive(server.url, images, c, per_round, warmup=0.5)
                    collected[name] = (collected[name][0] + lat, collected[name][1] + failed)
            for name, (lat, failed) in collected.items():
                row = summarise(name, c, lat, failed, args.duration)
                rows.append(row)
                print(f"{name:9s} c={c:<3d} {row['rps']:7.1f} req/s  p50 {row['p50']:7.1f} ms  "
                      f"p95 {row['p95']:7.1f} ms  p99 {row['p99']:7.1f} ms  "
                      f"failed {row['failed']}", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    return rows


def table(rows: list[dict], config: str) -> str:
    by = {(r["server"], r["concurrency"]): r for r in rows}
    load = os.getloadavg()[0]
    lines = [f"Machine: {machine()}; 1-min load average at the end: {load:.1f}. "
             f"Model: resnet18 at 224 px, 640x480 JPEG uploads. Ours: {config}.", "",
             "| clients | server | req/s | p50 ms | p95 ms | p99 ms | failed |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for c in sorted({r["concurrency"] for r in rows}):
        for name in ("ours", "tutorial"):
            r = by.get((name, c))
            if r:
                lines.append(f"| {c} | {name} | {r['rps']:.1f} | {r['p50']:.0f} | "
                             f"{r['p95']:.0f} | {r['p99']:.0f} | {r['failed']} |")
        ours, tut = by.get(("ours", c)), by.get(("tutorial", c))
        if ours and tut:
            lines.append(f"| {c} | **ratio** | **{ours['rps'] / tut['rps']:.2f}x** | "
                         f"**{ours['p50'] / tut['p50']:.2f}x** | "
                         f"{ours['p95'] / tut['p95']:.2f}x | {ours['p99'] / tut['p99']:.2f}x | |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--duration", type=float, default=30.0,
                        help="measured seconds per server and concurrency")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds the duration is split into")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--workers", type=int, help="WEB_CONCURRENCY for ours (default: ours)")
    parser.add_argument("--threads", type=int, help="THREADS for ours")
    parser.add_argument("--inference-threads", type=int, help="INFERENCE_THREADS for ours")
    parser.add_argument("--runtime", help="INFERENCE_RUNTIME for ours")
    parser.add_argument("--skip-tutorial", action="store_true")
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / "results" / "serve"))
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    rows = run(args)
    config = ", ".join(f"{k}={getattr(args, k)}" for k in
                       ("workers", "threads", "inference_threads", "runtime")
                       if getattr(args, k) is not None) or "default settings"
    print()
    print(table(rows, config))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
