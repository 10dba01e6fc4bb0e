"""A model swap under load: failed requests, p50 and p99 before, during and after, peak memory.

    .venv/bin/python -m benchmarks.swap_under_load [--model M] [--lean] [--clients 8]

The real gunicorn server serves models/versions/<A> (two versions copied from --model, default
an untrained resnet18 at 224 px, with its compiled ONNX graph) while 8 clients post photos;
the pointer then moves to <B> (a promote) and every worker swaps in place (app/model_follow.py).
Phases by request start: before the move, during it (until every worker answers with B) and
after. Memory: each worker's peak RSS during the swap against its RSS before (two models are
resident in the worker that is swapping), and the peak PSS of all server processes. `--lean`
runs the server with torch hidden (the lean image's onnxruntime-only runtime). Prints the
machine's CPU and load before and after: measure only on a quiet machine (load < 0.5).
"""
from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.cli import benchmark_args
from classifier.versions import move_pointer
from harness import ROOT
from harness.load import in_background
from harness.machine import machine_line
from harness.servers import GunicornServer
from harness.versions import VersionProbe, bench_versions

A, B = "20261205-090000-aaaaaa", "20261205-100000-bbbbbb"
NO_TORCH = ROOT / "tests" / "deploy" / "no_torch"  # sitecustomize: torch, fastai not importable
MB = 2**20


class WorkerPeaks:
    """Each worker's highest RSS, and the server's highest PSS, sampled every 0.1 s."""

    def __init__(self, server: GunicornServer):
        self.server, self.rss, self.pss = server, {}, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(0.1):
            for pid in self.server.worker_pids():
                try:
                    rss = psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    continue
                self.rss[pid] = max(self.rss.get(pid, 0), rss)
            tick += 1
            if tick % 10 == 0:
                self.pss = max(self.pss, self.server.pss_bytes())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def phase(records, start: float, end: float) -> dict:
    """Requests started in [start, end): count, failures, p50 and p99 of the answered ones."""
    chosen = [r for r in records if start <= r.start < end]
    latencies = sorted((r.end - r.start) * 1000 for r in chosen if r.status == 200)

    def pct(q):
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) \
            if latencies else None

    return {"requests": len(chosen), "failed": sum(r.status != 200 for r in chosen),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def main(argv=None) -> int:
    args, model = benchmark_args(
        __doc__, ("--clients", {"type": int, "default": 8}),
        ("--seconds", {"type": float, "default": 20.0, "help": "before and after the swap"}),
        ("--workers", {"type": int, "default": 2}),
        ("--lean", {"action": "store_true", "help": "torch hidden: the lean runtime"}),
        ("--runtime", {"choices": ("auto", "onnx", "torch"), "default": "auto",
                       "help": "INFERENCE_RUNTIME (the 1 GB default machine runs torch)"}),
        ("--size", {"type": int, "default": 224, "help": "the default model's input side"}),
        argv=argv, model_optional=True)
    model, root, images = bench_versions(Path(tempfile.mkdtemp(prefix="swap-bench-")), model,
                                         args.size, (A, B))
    env = {"WEB_CONCURRENCY": args.workers, "MODEL_POLL_SECONDS": 1,
           "INFERENCE_RUNTIME": args.runtime}
    if args.lean:
        env["PYTHONPATH"] = str(NO_TORCH)
    print("before:", machine_line(), flush=True)
    with GunicornServer(root / "export.pkl", env=env) as server:
        stop = threading.Event()
        load, holder = in_background(server.url, args.clients, 3600, images=images, stop=stop)
        with VersionProbe(server.url, images[0]) as probe:
            probe.wait_for(A, time.monotonic())
            time.sleep(2)  # the load settles
            rss_before = {pid: psutil.Process(pid).memory_info().rss
                          for pid in server.worker_pids()}
            started = time.monotonic()
            time.sleep(args.seconds)
            peaks = WorkerPeaks(server)
            moved = time.monotonic()
            move_pointer(root, B, "promote")
            swap_s = probe.wait_for(B, moved, timeout=300)
            swapped = moved + swap_s
            peaks.stop()
            time.sleep(args.seconds)
        stop.set()
        load.join(timeout=120)
        ended = time.monotonic()
        records = holder["run"].records
        alive = server.alive()
    print("after:", machine_line(), flush=True)

    figures = {
        "model": str(model),
        "image": "lean (onnxruntime, no torch)" if args.lean else "default", "runtime": args.runtime,
        "workers": args.workers, "clients": args.clients, "swap_seconds": round(swap_s, 1),
        "before": phase(records, started, moved), "during": phase(records, moved, swapped),
        "after": phase(records, swapped, ended),
        "worker_rss_mb": {str(pid): {"before": round(rss / MB),
                                     "peak_during_swap": round(peaks.rss.get(pid, 0) / MB)}
                          for pid, rss in rss_before.items()},
        "server_pss_peak_mb": round(peaks.pss / MB), "server_alive": alive}
    print("\n| phase | requests | failed | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for name in ("before", "during", "after"):
        s = figures[name]
        print(f"| {name} | {s['requests']} | {s['failed']} | {s['p50_ms']} | {s['p99_ms']} |")
    print(f"\nswap: {figures['swap_seconds']} s until every answer names {B}; worker RSS (MB) "
          f"before -> peak during the swap: {figures['worker_rss_mb']}; all processes' peak "
          f"PSS {figures['server_pss_peak_mb']} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    failed = sum(figures[name]["failed"] for name in ("before", "during", "after"))
    return 0 if failed == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
