"""What each image target needs on a machine: size, seconds to /readyz, memory and req/s.

    make image && make image TARGET=lean        # or give --build to build them here
    .venv/bin/python -m benchmarks.deploy_footprint [--rounds 3] [--duration 20] [--clients 8]
    .venv/bin/python -m benchmarks.deploy_footprint --ready-only --rounds 5   # start-up only

Runs each built image's own CMD (docker, or buildah without a daemon: harness/containers.py)
with the image's own ENV, so workers and threads are what the machine implies
(app/config.py), alternating the targets round by round. Per round: time from start to
/readyz 200, then `--clients` concurrent clients post 640x480 JPEGs for `--duration`
seconds (`--ready-only`: no load; start-up and idle memory only). "to explanations" is
the time from start until /readyz no longer says `"explanations": "loading"` (the default
image loads PyTorch behind its compiled graph: app/explainer.py; as one worker reports it).
Memory is PSS summed over the server's processes (shared preloaded pages
counted once, as the kernel charges them) and peaks are sampled during the load.
Pages mapped from CUDA libraries are left out (/proc/PID/smaps): they exist only
because this machine's torch wheel is the CUDA one; the CPU-only wheel the image
installs by default has none. Prints medians with the spread, the CPU and the load average
before and after.
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

from harness.bench_assets import build_assets
from harness.containers import (
    Container,
    Image,
    build,
    build_context,
    find_engine,
    stop,
    wait_ready,
)
from harness.load import drive
from harness.machine import load_average, machine_line
from harness.servers import free_port

MB = 1024 * 1024
# Mappings that only a CUDA build of torch has (the image's CPU wheel has none of them).
CUDA_MAPPING = re.compile(r"/nvidia/|/triton/|libtorch_cuda|libc10_cuda|libcud|libnccl|libcublas|"
                          r"libcusparse|libcufft|libcurand|libcusolver|libnvrtc|libnvjitlink|libcupti")


def pss_without_cuda(pid: int) -> int:
    """PSS of one process in bytes, CUDA library mappings left out."""
    total, skip = 0, False
    try:
        with open(f"/proc/{pid}/smaps") as fh:
            for line in fh:
                if not line[0].isupper() or " " in line.split(":", 1)[0]:  # a mapping's header
                    skip = bool(CUDA_MAPPING.search(line))
                elif line.startswith("Pss:") and not skip:
                    total += int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return total


def server_pids(launcher: subprocess.Popen) -> list[int]:
    """gunicorn's master and workers (not buildah's chroot helpers that started them)."""
    return [p.pid for p in psutil.Process(launcher.pid).children(recursive=True)
            if "gunicorn" in " ".join(p.cmdline()) and not p.cmdline()[0].startswith("buildah")]


def explanations_ready(base: str, timeout: float) -> float:
    """Seconds until /readyz stops saying that explanations are loading."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if requests.get(f"{base}/readyz", timeout=5).json().get("explanations") != "loading":
            break
        time.sleep(0.05)
    return time.monotonic() - began


def one_round(image: Image, images: list[bytes], clients: int, duration: float,
              env: dict[str, str]) -> dict:
    """One start of `image`; with `duration` 0 (--ready-only), no load is driven."""
    port = free_port()
    container = Container(image, {"PORT": str(port), **env})
    base = f"http://127.0.0.1:{port}"
    try:
        server = container.start(image.config()["Cmd"])
        ready = wait_ready(base, server, 300)
        explained = ready + explanations_ready(base, 300)
        idle = sum(pss_without_cuda(pid) for pid in server_pids(server))
        if not duration:
            workers = len(server_pids(server)) - 1
            stop(server)
            return {"ready_s": ready, "explained_s": explained, "idle_mb": idle / MB,
                    "peak_mb": idle / MB, "req_s": 0.0, "failed": 0, "workers": workers}
        peak, done = [idle], threading.Event()

        def sample():
            while not done.wait(1.0):
                peak.append(sum(pss_without_cuda(pid) for pid in server_pids(server)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        run = drive(base, clients, duration, images=images, timeout=60)
        done.set()
        sampler.join()
        workers = len(server_pids(server)) - 1
        stop(server)
    finally:
        container.remove()
    return {"ready_s": ready, "explained_s": explained, "idle_mb": idle / MB,
            "peak_mb": max(peak) / MB,
            "req_s": len(run.ok) / duration, "failed": len(run.failures), "workers": workers}


def spread(values, fmt="{:.1f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, help="set WEB_CONCURRENCY (default: the "
                        "image decides from the CPUs and memory limit)")
    parser.add_argument("--targets", nargs="+", default=["default", "lean"])
    parser.add_argument("--ready-only", action="store_true",
                        help="time start-up only: no load, no peak memory or req/s")
    parser.add_argument("--build", action="store_true",
                        help="build both targets here with a resnet18 at 224 px (else use "
                             "image-classifier:default and :lean as `make image` left them)")
    args = parser.parse_args(argv)
    engine, why = find_engine()
    if engine is None:
        sys.exit(f"no container engine: {why}")
    workdir = Path(tempfile.mkdtemp(prefix="footprint-"))
    model, uploads = build_assets(workdir, 224, 16, ["small"])
    images = uploads["small"]
    tags = {target: f"image-classifier:{target}" for target in args.targets}
    env = {"WEB_CONCURRENCY": str(args.workers)} if args.workers else {}
    if args.build:
        (workdir / "models").mkdir()
        shutil.copy(model, workdir / "models" / "export.pkl")
        context = build_context(workdir / "ctx", workdir / "models")
        for target, tag in tags.items():
            result = build(target, tag, context, 3600)
            if result.returncode:
                sys.exit(result.stdout[-3000:] + result.stderr[-3000:])
    built = {target: Image(engine, tag) for target, tag in tags.items()}
    print("before:", machine_line())
    results = {target: [] for target in built}
    duration = 0 if args.ready_only else args.duration
    for _ in range(args.rounds):
        for target, image in built.items():  # alternate the targets round by round
            results[target].append(one_round(image, images, args.clients, duration, env))
    print("after: ", load_average())
    load = "no load" if args.ready_only else \
        f"{args.clients} clients, 640x480 JPEGs, {duration:.0f} s per round"
    print(f"\n{load}, {args.rounds} rounds; median (min-max); PSS without CUDA library pages")
    print("| target | image size | workers | start to /readyz | to explanations | idle PSS "
          "| peak PSS | req/s | failed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for target, rows in results.items():
        print(f"| {target} | {built[target].size_bytes() / 1e6:,.0f} MB | {rows[0]['workers']} "
              f"| {spread([r['ready_s'] for r in rows])} s "
              f"| {spread([r['explained_s'] for r in rows])} s "
              f"| {spread([r['idle_mb'] for r in rows], '{:.0f}')} MB "
              f"| {spread([r['peak_mb'] for r in rows], '{:.0f}')} MB "
              f"| {spread([r['req_s'] for r in rows])} | {sum(r['failed'] for r in rows)} |")


if __name__ == "__main__":
    main()
