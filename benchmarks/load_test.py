"""The long load and fault run against a real gunicorn with the shipped defaults.

    .venv/bin/python -m benchmarks.load_test --clients 8 --seconds 120 [--model models/export.pkl]

Three phases on one server: steady load (zero failures expected), the same load with one
worker killed by SIGKILL a third of the way in (only in-flight requests may fail), and the
same load with SIGTERM to the master (in-flight requests complete, exit code 0). Prints
throughput, p50/p95/p99 and failures per phase, and the peak memory of all server processes.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from benchmarks.cli import benchmark_args
from harness.load import drive, in_background, sample_images
from harness.memory import MemoryWatch
from harness.servers import GunicornServer


def main(argv=None) -> int:
    args, model = benchmark_args(
        __doc__, ("--clients", {"type": int, "default": 8}),
        ("--seconds", {"type": float, "default": 60.0, "help": "per phase"}),
        ("--image-size", {"type": int, "default": 224,
                          "help": "side of the uploaded images (the model resizes them)"}),
        argv=argv)
    images = sample_images(12, (args.image_size, args.image_size))
    mb = 2**20
    figures: dict = {"clients": args.clients}
    ok = True
    with GunicornServer(model) as server:
        workers = server.worker_pids()
        watch = MemoryWatch(server)
        drive(server.url, 1, 2, images=images)  # warm-up

        run = drive(server.url, args.clients, args.seconds, images=images)
        figures["steady"] = run.summary()
        ok &= not run.failures
        print("steady:", figures["steady"], flush=True)

        victim = server.worker_pids()[0]
        thread, holder = in_background(server.url, args.clients, args.seconds, images=images)
        time.sleep(args.seconds / 3)
        os.kill(victim, signal.SIGKILL)
        thread.join()
        run = holder["run"]
        figures["kill9"] = dict(run.summary(), failures=len(run.failures))
        ok &= len(run.failures) <= args.clients and server.alive()
        print("kill -9 a worker:", figures["kill9"], flush=True)
        server.wait_workers(len(workers), exclude=(victim,))

        thread, holder = in_background(server.url, args.clients, args.seconds, images=images)
        time.sleep(args.seconds / 3)
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.wait_exit(120)
        thread.join()
        run = holder["run"]
        before = [r for r in run.records if r.start < signalled - 0.05]
        lost = [r for r in before if r.status != 200]
        figures["sigterm"] = dict(run.summary(), exit_code=code, sent_before_signal=len(before),
                                  in_flight_lost=len(lost),
                                  refused_after_signal=len(run.records) - len(before))
        ok &= code == 0 and not lost
        print("SIGTERM the master:", figures["sigterm"], flush=True)
        watch.stop()
        figures["rss_peak_mb"] = round(watch.peak_rss / mb)
        figures["pss_peak_mb"] = round(watch.peak_pss / mb)
        figures["workers"] = len(workers)

    print("\n| phase | requests | failed | req/s | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|---|---|")
    for phase in ("steady", "kill9", "sigterm"):
        s = figures[phase]
        print(f"| {phase} | {s['requests']} | {s['failed']} | {s['throughput_rps']} | "
              f"{s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} |")
    s = figures["sigterm"]
    print(f"\nSIGTERM: {s['sent_before_signal']} requests sent before the signal, "
          f"{s['in_flight_lost']} of them lost; exit code {s['exit_code']}; "
          f"{s['refused_after_signal']} attempts after it were refused (listener closed)")
    print(f"peak RSS of all server processes: {figures['rss_peak_mb']} MB "
          f"(PSS {figures['pss_peak_mb']} MB), {figures['workers']} workers")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
