"""Serving benchmark: our gunicorn service against the tutorial way, same model, images, load.

    .venv/bin/python -m benchmarks.serve_bench [--inputs small phone heic]
        [--concurrency 1 4 8] [--duration 30] [--ours 2x1 1x2 ...] [--precision auto int8]

1. Builds a resnet18 at 224 px with fastai (vision_learner, pretrained=False:
   weights do not change speed) and exports it, plus the uploads of each input kind:
   small (640x480 JPEGs), phone (12 MP 4032x3024 JPEGs stored sideways with EXIF
   orientation 6, about 4 MB) and heic (the same 12 MP photos as HEIC).
2. Starts every server once, each with its own command line:
   - ours: `gunicorn -c gunicorn.conf.py "app:create_app()"` (harness/servers.py), with
     its defaults or, per --ours WxI, WEB_CONCURRENCY=W and INFERENCE_THREADS=I,
   - tutorial: `gunicorn tutorial_app:app` in benchmarks/ (one sync worker, gunicorn's
     defaults: what the fastai/fly.io tutorials deploy), calling learn.predict
     (it cannot read HEIC, so it sits out those rounds),
   then for each input and client count C drives POST /predict (multipart `file`) from
   C client threads, the servers taking turns in short rounds, and records every latency.
3. Prints requests/s, p50/p95/p99 and the ratios, with the load average before and after
   each run, and the CPU the client threads took per request (they share the cores with the
   servers); --json writes them too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from classifier.engine_choice import PRECISIONS
from harness import ROOT, load
from harness.bench_assets import INPUTS, build_assets, compile_with_examples, upload_images
from harness.machine import cpu, load_average
from harness.servers import GunicornServer, free_port


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

    def wait_ready(self, image: tuple[str, bytes, str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("tutorial server exited")
            try:
                if load.post_image(requests, self.url, image).status_code == 200:
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


def process_cpu_seconds() -> float:
    """CPU time of this process, which runs the clients (the servers are child processes): on
    a 2-core machine the clients' share is CPU the servers did not get. Divided by the recorded
    requests, it includes each round's unrecorded warm-up: a slight overestimate."""
    times = os.times()
    return times.user + times.system


def summarise(server: str, kind: str, concurrency: int, runs: list[load.LoadRun],
              seconds: float, loads: tuple[str, str]) -> dict:
    """One row of the table from a server's rounds (each a harness.load.LoadRun)."""
    latencies = [r.end - r.start for run in runs for r in run.ok]
    failed = sum(len(run.failures) for run in runs)
    lat = np.array(latencies) * 1000
    pct = (lambda q: float(np.percentile(lat, q))) if len(lat) else (lambda q: float("nan"))
    return {"server": server, "input": kind, "concurrency": concurrency,
            "load_before": loads[0], "load_after": loads[1], "requests": len(latencies),
            "failed": failed, "rps": len(latencies) / seconds,
            "p50": pct(50), "p95": pct(95), "p99": pct(99)}


def machine() -> str:
    return f"{cpu()}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def ours_env(args, spec: str | None) -> dict:
    env = {"THREADS": args.threads, "INFERENCE_RUNTIME": args.runtime,
           "WEB_CONCURRENCY": args.workers, "INFERENCE_THREADS": args.inference_threads}
    if spec:
        workers, inference_threads = spec.lower().split("x")
        env.update(WEB_CONCURRENCY=workers, INFERENCE_THREADS=inference_threads)
    return {k: str(v) for k, v in env.items() if v is not None}


def engine_chosen(url: str, timeout: float = 300) -> str:
    """The engine a server settled on: a first start measures the engines in the background
    (app/engine_switch.py) and serves f32 meanwhile, which is not what the benchmark is of.
    Waits until 10 answers in a row (from either worker) are past the measurement."""
    deadline, settled = time.monotonic() + timeout, 0
    while settled < 10 and time.monotonic() < deadline:
        engine = requests.get(f"{url}/model", timeout=10).json().get("engine") or {}
        settled = 0 if engine.get("measured") == "measuring" else settled + 1
        time.sleep(0.2)
    return f"engine {engine.get('engine', 'none chosen (see /model runtime)')} ({engine.get('reason', '')})"


def run(args) -> list[dict]:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model, images = build_assets(workdir, args.size, args.images, args.inputs)
    if args.precision:
        compile_with_examples(model)  # the image build's graph, and its int8 copy
    rows = []
    servers = {}
    try:
        for spec in args.ours or [None]:
            for precision in args.precision or [None]:
                name = " ".join(["ours", *filter(None, (spec, precision))])
                env = ours_env(args, spec)
                if precision:
                    env["INFERENCE_PRECISION"] = precision
                servers[name] = GunicornServer(model, env=env)
                servers[name].start()
                print(f"{name}: {engine_chosen(servers[name].url)}", flush=True)
        if not args.skip_tutorial:
            servers["tutorial"] = TutorialServer(model)
            servers["tutorial"].wait_ready(images[args.inputs[0]][0]
                                           if args.inputs[0] != "heic" else
                                           upload_images("small", np.random.default_rng(1), 1)[0])
        # All servers stay up (an idle one costs no CPU) and are driven in alternating
        # rounds, so a neighbour's load on a shared machine falls on each alike.
        per_round = args.duration / args.rounds
        for kind in args.inputs:
            # fastai's PILImage.create cannot read HEIC: the tutorial way answers 500 to it
            driven = {n: s for n, s in servers.items() if not (kind == "heic" and n == "tutorial")}
            for c in args.concurrency:
                for server in driven.values():  # warm connections and caches
                    load.drive(server.url, c, 0, images=images[kind], timeout=60, warmup=2.0)
                before = load_average()
                collected = {name: [] for name in driven}
                client_cpu = dict.fromkeys(driven, 0.0)
                for _ in range(args.rounds):
                    for name, server in driven.items():
                        began = process_cpu_seconds()
                        collected[name].append(load.drive(server.url, c, per_round,
                                                          images=images[kind], timeout=60,
                                                          warmup=0.5))
                        client_cpu[name] += process_cpu_seconds() - began
                after = load_average()
                print(f"{kind} c={c}: before {before}; after {after}", flush=True)
                for name, runs in collected.items():
                    row = summarise(name, kind, c, runs, args.duration, (before, after))
                    sent = sum(len(run.records) for run in runs)
                    row["client_cpu_ms"] = client_cpu[name] * 1000 / max(1, sent)
                    rows.append(row)
                    print(f"  {name:12s} {row['rps']:7.1f} req/s  p50 {row['p50']:7.1f} ms  "
                          f"p95 {row['p95']:7.1f} ms  p99 {row['p99']:7.1f} ms  "
                          f"failed {row['failed']}  clients' CPU {row['client_cpu_ms']:.1f} "
                          f"ms/request", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    return rows


def table(rows: list[dict], config: str) -> str:
    lines = [f"Machine: {machine()}. Model: resnet18 at 224 px. Ours: {config}.", "",
             ("| input | clients | server | req/s | p50 ms | p95 ms | p99 ms | failed | "
              "load avg before -> after |"),
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for kind in dict.fromkeys(r["input"] for r in rows):
        for c in sorted({r["concurrency"] for r in rows if r["input"] == kind}):
            group = [r for r in rows if r["input"] == kind and r["concurrency"] == c]
            tut = next((r for r in group if r["server"] == "tutorial"), None)
            for r in group:
                lines.append(f"| {kind} | {c} | {r['server']} | {r['rps']:.1f} | {r['p50']:.0f} | "
                             f"{r['p95']:.0f} | {r['p99']:.0f} | {r['failed']} | "
                             f"{r['load_before'][13:]} -> {r['load_after'][13:]} |")
            for r in group:
                if tut and r is not tut:
                    lines.append(f"| {kind} | {c} | **{r['server']} / tutorial** | "
                                 f"**{r['rps'] / tut['rps']:.2f}x** | "
                                 f"**{r['p50'] / tut['p50']:.2f}x** | "
                                 f"{r['p95'] / tut['p95']:.2f}x | {r['p99'] / tut['p99']:.2f}x | | |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", nargs="+", choices=sorted(INPUTS),
                        default=["small", "phone", "heic"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--duration", type=float, default=30.0,
                        help="measured seconds per server, input and concurrency")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds the duration is split into")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--ours", nargs="+", metavar="WxI",
                        help="several of ours side by side: WEB_CONCURRENCY x INFERENCE_THREADS")
    parser.add_argument("--workers", type=int, help="WEB_CONCURRENCY for ours (default: ours)")
    parser.add_argument("--threads", type=int, help="THREADS for ours")
    parser.add_argument("--inference-threads", type=int, help="INFERENCE_THREADS for ours")
    parser.add_argument("--runtime", help="INFERENCE_RUNTIME for ours")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS,
                        help="one of ours per INFERENCE_PRECISION; the export is then compiled "
                        "with examples, as the image build does, which makes its int8 copy")
    parser.add_argument("--skip-tutorial", action="store_true")
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / "results" / "serve"))
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    print(f"start: {machine()}; {load_average()}", flush=True)
    rows = run(args)
    config = ", ".join(f"{k}={getattr(args, k)}" for k in
                       ("workers", "threads", "inference_threads", "runtime")
                       if getattr(args, k) is not None) or "default settings"
    print()
    print(table(rows, config))
    print(f"\nend: {load_average()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
