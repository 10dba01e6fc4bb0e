"""Batch prediction speed on phone-sized photos: images/s of `python -m classifier.predict`.

    .venv/bin/python -m benchmarks.batch_predict_bench [--images 12] [--rounds 3]

Makes photo-like 4032x3024 (12 MP) JPEGs and a resnet18 at 224 px (harness/bench_assets.py,
untrained: weights do not change speed), then runs the CLI's own loop
(classifier.predict.predict_files: read, decode with classifier.images, resize,
batch through Predictor) with 1 decoding thread and with the CLI's default, in
alternating rounds. Prints median and spread of images/s, with the load average
before and after, since the figure means little on a busy machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from classifier.inference import Predictor
from classifier.model_files import load_learner_checked
from classifier.predict import predict_files
from harness.bench_assets import build_assets, make_photo
from harness.machine import load_average, machine_line

PHOTO = (4032, 3024)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runtime", default="auto", choices=("auto", "onnx", "torch"))
    args = parser.parse_args(argv)
    default_workers = min(4, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model, _ = build_assets(workdir, 224, 0, ())
        rng = np.random.default_rng(1)
        files = []
        for i in range(args.images):
            path = workdir / f"photo{i}.jpg"
            make_photo(rng, PHOTO).save(path, quality=90)
            files.append(path)
        mb = sum(p.stat().st_size for p in files) / len(files) / 2**20
        learner, _ = load_learner_checked(model)
        predictor = Predictor(learner, runtime=args.runtime)
        predictor.warm_up()
        print(f"{args.images} JPEGs of {PHOTO[0]}x{PHOTO[1]} ({mb:.1f} MB each), resnet18 at "
              f"224 px, runtime {predictor.runtime}")
        print(f"before: {machine_line()}")
        rates: dict[int, list[float]] = {1: [], default_workers: []}
        for _ in range(args.rounds):
            for workers in rates:  # alternate the two settings round by round
                start = time.perf_counter()
                rows = list(predict_files(predictor, files, None, workers=workers))
                elapsed = time.perf_counter() - start
                assert not any(r["error"] for r in rows)
                rates[workers].append(len(files) / elapsed)
        print(f"after: {load_average()}")
        print(f"{'decode threads':>15} {'images/s median':>16} {'min':>6} {'max':>6}")
        for workers, values in rates.items():
            print(f"{workers:>15} {statistics.median(values):>16.2f} {min(values):>6.2f} "
                  f"{max(values):>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
