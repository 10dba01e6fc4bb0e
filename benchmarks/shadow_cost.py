"""A shadow candidate's cost: p50 at one client and throughput at 8 clients, with and without it.

    .venv/bin/python -m benchmarks.shadow_cost [--model M] [--rounds 5] [--seconds 15] [--share 0.1]

Two real gunicorn servers of one models/ folder (two versions copied from --model, default an
untrained resnet18 at 224 px with its compiled ONNX graph) run side by side, idle in turn: one
serves A alone, the other A with SHADOW_MODEL=B at --share (app/shadow.py). Rounds alternate
which is measured first; each measures p50 at 1 client and throughput at 8 clients on both.
Prints the median and spread (min-max) of each, the p50 change against the goal (at most
+10 % at one client), what the shadow did (/shadow: shadowed, dropped) and the machine's CPU
and load before and after: measure only on a quiet machine (load < 0.5).
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

import requests

from benchmarks.cli import benchmark_args
from harness.load import drive
from harness.machine import machine_line
from harness.servers import GunicornServer
from harness.versions import bench_versions

A, B = "20261205-090000-aaaaaa", "20261205-100000-bbbbbb"
GOAL_P50 = 0.10  # the shadow may add at most this share to p50 at one client
WARMUP_S = 2.0   # each measurement's first seconds are not recorded


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1), "runs": [round(v, 1) for v in values]}


def measure(server: GunicornServer, seconds: float, images) -> tuple[float, float]:
    """(p50 ms at 1 client, answers per second at 8 clients) on one server."""
    alone = drive(server.url, 1, seconds, images=images, warmup=WARMUP_S).summary()
    loaded = drive(server.url, 8, seconds, images=images, warmup=WARMUP_S).summary()
    for run in (alone, loaded):
        if run["failed"]:
            sys.exit(f"{run['failed']} requests failed on {server.url}: {server.log_tail()}")
    return alone["p50_ms"], loaded["throughput_rps"]


def main(argv=None) -> int:
    args, model = benchmark_args(
        __doc__, ("--rounds", {"type": int, "default": 5}),
        ("--seconds", {"type": float, "default": 15.0, "help": "each measurement"}),
        ("--share", {"type": float, "default": 0.1, "help": "SHADOW_SHARE"}),
        ("--workers", {"type": int, "default": 2}),
        ("--size", {"type": int, "default": 224, "help": "the default model's input side"}),
        argv=argv, model_optional=True)
    model, root, images = bench_versions(Path(tempfile.mkdtemp(prefix="shadow-bench-")), model,
                                         args.size, (A, B))
    env = {"WEB_CONCURRENCY": args.workers}
    print("before:", machine_line(), flush=True)
    figures = {"without": ([], []), "with": ([], [])}
    with GunicornServer(root / "export.pkl", env=env) as plain, \
            GunicornServer(root / "export.pkl", env={**env, "SHADOW_MODEL": B,
                                                     "SHADOW_SHARE": args.share}) as shadowed:
        servers = {"without": plain, "with": shadowed}
        for round_ in range(args.rounds):
            order = ("without", "with") if round_ % 2 == 0 else ("with", "without")
            for name in order:
                p50, rps = measure(servers[name], args.seconds, images)
                figures[name][0].append(p50)
                figures[name][1].append(rps)
                print(f"round {round_ + 1}, {name} shadow: p50 {p50} ms at 1 client, "
                      f"{rps} answers/s at 8", flush=True)
        field = requests.get(shadowed.url + "/shadow", timeout=10).json()
    print("after:", machine_line(), flush=True)

    result = {"model": str(model), "workers": args.workers, "share": args.share,
              "rounds": args.rounds, "seconds": args.seconds,
              **{name: {"p50_ms_1_client": spread(p50s), "throughput_rps_8_clients": spread(rps)}
                 for name, (p50s, rps) in figures.items()},
              "shadow": field["pairs"]}
    without, with_ = (result[n]["p50_ms_1_client"]["median"] for n in ("without", "with"))
    change = (with_ - without) / without
    print("\n| shadow | p50 ms, 1 client (median, min-max) | answers/s, 8 clients |\n|---|---|---|")
    for name in ("without", "with"):
        p50, rps = result[name]["p50_ms_1_client"], result[name]["throughput_rps_8_clients"]
        print(f"| {name} | {p50['median']} ({p50['min']}-{p50['max']}) | "
              f"{rps['median']} ({rps['min']}-{rps['max']}) |")
    print(f"\np50 at one client {change:+.1%} with a shadow at share {args.share} "
          f"(goal: at most +{GOAL_P50:.0%}); the shadow: "
          + "; ".join(f"{p['requests']} beside {p['live']}" for p in field["pairs"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
