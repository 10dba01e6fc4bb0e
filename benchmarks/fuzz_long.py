"""The long hostile-input run: the whole generated corpus, then random hostile requests for
--minutes from several parallel clients, against a real gunicorn. Prints the figures.

    .venv/bin/python -m benchmarks.fuzz_long --minutes 10 [--model models/export.pkl]

The server runs with low limits (MAX_UPLOAD_MB=1, MAX_IMAGE_PIXELS=4000000, MAX_BATCH=8) so
oversize and bomb cases are cheap. Exit status 1 if any response was a 5xx or broke the
contract, if a worker died or was replaced, or if memory grew without bound.
"""
from __future__ import annotations

import json
import random
import sys
import threading
import time
from pathlib import Path

from benchmarks.cli import benchmark_args
from harness.hostile_cases import corpus, random_case
from harness.judge import run_cases
from harness.memory import MemoryWatch
from harness.raw_http import send
from harness.servers import GunicornServer

ENV = {"MAX_UPLOAD_MB": "1", "MAX_IMAGE_PIXELS": "4000000", "MAX_BATCH": "8",
       "WEB_CONCURRENCY": "2", "THREADS": "2"}


def main(argv=None) -> int:
    args, model = benchmark_args(
        __doc__, ("--minutes", {"type": float, "default": 10.0}),
        ("--clients", {"type": int, "default": 2}), ("--seed", {"type": int, "default": 1}),
        argv=argv)
    mb = 2**20
    with GunicornServer(model, env=ENV) as server:
        watch = MemoryWatch(server)
        pids = server.worker_pids()
        print(f"server on {server.url}, workers {pids}, RSS {watch.baseline_rss / mb:.0f} MB",
              flush=True)
        start = time.monotonic()
        cases = corpus(max_upload_mb=1.0, max_batch=8, seed=args.seed, mutants_per_format=10)
        tally = run_cases(server.port, cases)
        print(f"corpus: {tally.cases} cases in {time.monotonic() - start:.0f}s, "
              f"5xx {tally.server_errors}, problems {len(tally.problems)}", flush=True)

        deadline = time.monotonic() + args.minutes * 60
        lock = threading.Lock()

        def fuzzer(k: int):
            rng = random.Random(args.seed * 1000 + k)
            while time.monotonic() < deadline:
                case = random_case(rng)
                out = send(server.port, case.raw, timeout=case.timeout)
                with lock:
                    tally.add(case, out)

        def progress():
            while time.monotonic() < deadline:
                time.sleep(30)
                with lock:
                    print(f"  {time.monotonic() - start:5.0f}s  {tally.cases} cases, "
                          f"5xx {tally.server_errors}, RSS {server.rss_bytes() / mb:.0f} MB "
                          f"(peak {watch.peak_rss / mb:.0f})", flush=True)

        threads = [threading.Thread(target=fuzzer, args=(k,), daemon=True)
                   for k in range(args.clients)]
        threads.append(threading.Thread(target=progress, daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=args.minutes * 60 + 120)
        watch.stop()
        elapsed = time.monotonic() - start
        same_workers = server.worker_pids() == pids
        figures = {
            "cases": tally.cases, "seconds": round(elapsed), "server_errors": tally.server_errors,
            "no_response": tally.no_response, "problems": len(tally.problems),
            "statuses": {str(k): v for k, v in sorted(tally.statuses.items(), key=str)},
            "codes": dict(tally.codes), "same_workers": same_workers, "ready": server.ready(),
            "rss_baseline_mb": round(watch.baseline_rss / mb),
            "rss_peak_mb": round(watch.peak_rss / mb),
            "pss_peak_mb": round(watch.peak_pss / mb),
            "rss_after_mb": round(server.rss_bytes() / mb),
        }
    print("\n| figure | value |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {value} |")
    for problem in tally.problems[:30]:
        print("PROBLEM:", problem)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    grew = figures["rss_after_mb"] - figures["rss_baseline_mb"] > 300
    bad = tally.server_errors or tally.problems or not same_workers or not figures["ready"] or grew
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
