"""Training on 1 process against N processes under `accelerate launch`, on the digits demo.

    .venv/bin/python -m benchmarks.train_processes [--rounds 3] [--processes 2] [--epochs 5]

Each round runs the real command twice, in alternating order (1 then N, then N then 1): the
demo (scikit-learn's digits, 24 px, resnet18 from scratch, bs 64, learning rate from lr_find)
with `python -m training.train`, and the same under `accelerate launch --multi_gpu
--num_processes N` (CPU processes over gloo where there is no GPU, one per GPU where there
are). Every run writes a new models folder; the digits are written once, before the clocks.
It prints each run's wall time (start-up, lr_find, fit, evaluation and export: what a user
waits for), validation accuracy and learning rate, then the median and spread per process
count. The CPU, its flags and the load average are printed before and after each run: a
figure from a busy machine is not a headline figure (docs/measurements.md#several-processes).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import ROOT
from harness.machine import load_average, machine_line


def command(processes: int, epochs: int, out: Path) -> list[str]:
    launch = [] if processes == 1 else [
        "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [sys.executable, *launch, "-m", "training.train", "--epochs", str(epochs),
            "--out", str(out)]


def train(processes: int, epochs: int, workdir: Path, run: int) -> dict:
    """One training run in workdir (where data/digits/ is): wall seconds, accuracy, lr."""
    out = workdir / f"run{run}-{processes}p" / "export.pkl"
    started = time.perf_counter()
    proc = subprocess.run(command(processes, epochs, out), cwd=workdir, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{processes} process(es) failed (exit {proc.returncode}):\n"
                 + (proc.stdout + proc.stderr)[-3000:])
    meta = json.loads(next(out.parent.glob("versions/*/export.json")).read_text())
    return {"processes": processes, "seconds": seconds, "lr": meta["training"]["lr"],
            "accuracy": meta["metrics"]["validation"]["accuracy"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="pairs of runs, order alternating")
    p.add_argument("--processes", type=int, default=2, help="N, the launched run's processes")
    p.add_argument("--epochs", type=int, default=5, help="the demo's default: 5")
    p.add_argument("--json", help="also write every run's figures to this file")
    args = p.parse_args(argv)
    from training.demo_data import write_digits

    print(f"before: {machine_line()}")
    print(f"digits demo, 24px, resnet18 from scratch, bs 64, {args.epochs} epochs; 1 process "
          f"against {args.processes} under accelerate launch, {args.rounds} round(s)", flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="train-processes-") as tmp:
        workdir = Path(tmp)
        write_digits(workdir / "data" / "digits")
        for round_ in range(args.rounds):
            order = (1, args.processes) if round_ % 2 == 0 else (args.processes, 1)
            for processes in order:
                before = load_average()
                result = train(processes, args.epochs, workdir, len(runs))
                runs.append(result)
                print(f"  round {round_ + 1}, {processes} process(es): {result['seconds']:6.1f} s"
                      f"  accuracy {result['accuracy']:.4f}  lr {result['lr']:.2e}  ({before}; "
                      f"after: {load_average()})", flush=True)
    for processes in (1, args.processes):
        mine = [r for r in runs if r["processes"] == processes]
        seconds, accuracy = [r["seconds"] for r in mine], [r["accuracy"] for r in mine]
        print(f"{processes} process(es): median {statistics.median(seconds):.1f} s (spread "
              f"{min(seconds):.1f}-{max(seconds):.1f}), accuracy median "
              f"{statistics.median(accuracy):.4f} (spread {min(accuracy):.4f}-{max(accuracy):.4f})")
    print(f"after: {machine_line()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
