"""The model alone, in one process: milliseconds per image by runtime, inference threads and batch.

    .venv/bin/python -m benchmarks.inference_bench [--threads 1 2] [--batches 1 2 4 8] [--rounds 5]

Builds the resnet18 at 224 px that serve_bench serves (harness/bench_assets.py) (fastai `vision_learner`,
pretrained=False: weights do not change speed), wraps it in `classifier.inference.Predictor`
for each runtime (onnxruntime, eager PyTorch) and thread count, and times `predict_prepared` on
model-sized tensors, so decoding and HTTP are left out. This is what decided that the service
uses onnxruntime and does not coalesce concurrent requests into batches (docs/serving.md).

Every configuration runs once per round, in turn, so a neighbour's load falls on all alike.
Prints the median and the spread (min-max) over rounds, with the load average before and after.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness.bench_assets import build_assets
from harness.machine import load_average, machine_line


def ms_per_image(predictor, items, threads: int, images: int) -> float:
    """Mean wall milliseconds per image over at least `images` images, in batches of len(items)."""
    import torch

    torch.set_num_threads(threads)  # eager PyTorch; an onnxruntime session has its own pool
    calls = max(1, images // len(items))
    start = time.perf_counter()
    for _ in range(calls):
        predictor.predict_prepared(items)
    return (time.perf_counter() - start) * 1000 / (calls * len(items))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=16, help="images timed per cell and round")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args(argv)

    from fastai.learner import load_learner

    from classifier.images import load_rgb
    from classifier.inference import Predictor

    print(f"before: {machine_line()}", flush=True)
    model, uploads = build_assets(Path(tempfile.mkdtemp(prefix="inference-bench-")), args.size,
                                  max(args.batches), ["small"])
    photos = [data for _, data, _ in uploads["small"]]
    learner = load_learner(model)
    predictors = {}
    for threads in args.threads:
        predictors["onnxruntime", threads] = Predictor(learner, runtime="onnx", threads=threads)
        predictors["torch", threads] = Predictor(learner, runtime="torch", threads=threads)
    items = [predictors["torch", args.threads[0]].prepare(load_rgb(p)) for p in photos]
    for (_, threads), predictor in predictors.items():  # warm-up: first calls allocate
        ms_per_image(predictor, items[:1], threads, 2)

    cells = [(runtime, threads, batch) for (runtime, threads) in predictors
             for batch in args.batches]
    times: dict[tuple, list[float]] = {cell: [] for cell in cells}
    for round_ in range(args.rounds):
        for runtime, threads, batch in cells:
            times[runtime, threads, batch].append(
                ms_per_image(predictors[runtime, threads], items[:batch], threads, args.images))
        print(f"round {round_ + 1}/{args.rounds} done, {load_average()}", flush=True)

    print(f"\nresnet18 at {args.size} px, {args.rounds} rounds, {args.images} images per cell "
          f"and round; after: {load_average()}\n")
    print("| runtime | inference threads | batch | ms per image, median | min-max |")
    print("|---|---:|---:|---:|---|")
    for runtime, threads, batch in cells:
        values = times[runtime, threads, batch]
        print(f"| {runtime} | {threads} | {batch} | {statistics.median(values):.1f} "
              f"| {min(values):.1f}-{max(values):.1f} |")


if __name__ == "__main__":
    main()
