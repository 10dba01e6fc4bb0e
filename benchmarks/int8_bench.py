"""int8 or not: ONNX Runtime static quantization against fp32, speed and validation accuracy.

    .venv/bin/python -m benchmarks.int8_bench [--size 224] [--epochs 3] [--rounds 5]

1. Trains a resnet18 from scratch (no downloads) with our DataBlock on generated photos of
   three classes told apart by a coloured block, so accuracy is neither 100 % nor chance.
2. Exports it to ONNX as classifier/inference.py does, and quantizes a copy as the compile
   step does (classifier/int8.py: QDQ, int8 weights per channel, uint8 activations,
   percentile ranges), calibrated on 32 training images through the learner's own transforms.
3. Alternating fp32 and int8 in rounds: one-image latency at 1 and 2 intra-op threads, and
   validation accuracy, top-1 agreement and the largest probability gap of the two. The rule
   the project adopted: int8 becomes an opt-in setting only if >= 1.5x faster with <= 0.5
   points of accuracy lost.
"""
from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from harness.bench_assets import smooth_photo
from harness.images import encode
from harness.machine import load_average, machine_line

CLASSES = {"a": (190, 90, 80), "b": (90, 180, 80), "c": (80, 90, 190)}


def make_data(root: Path, per_class: int, seed: int) -> None:
    """Photos with a large block whose colour is the class's plus strong jitter, so the
    classes overlap and some images sit near a decision boundary."""
    rng = np.random.default_rng(seed)
    for k, (label, colour) in enumerate(CLASSES.items()):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            im = smooth_photo((480, 360), seed=seed + 100 * k + i)
            jittered = np.clip(np.array(colour) + rng.normal(0, 35, 3), 0, 255).astype(int)
            im.paste(tuple(int(c) for c in jittered), (96, 72, 384, 288))
            (root / label / f"{i}.jpg").write_bytes(encode(im, "JPEG", quality=90))


def session(model_bytes: bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10, help="images timed per round")
    args = parser.parse_args(argv)
    from fastai.vision.all import resnet18, vision_learner

    from classifier.engine_choice import softmax
    from classifier.images import RGBLoader
    from classifier.inference import Predictor
    from classifier.int8 import quantize
    from training.data import dataloaders, find_dataset

    print(f"start: {machine_line()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        make_data(Path(tmp) / "train", args.per_class, 0)
        make_data(Path(tmp) / "valid", args.per_class // 2, 10_000)
        ds = find_dataset(Path(tmp))
        dls = dataloaders(ds, size=args.size, bs=16, augment=False)
        learn = vision_learner(dls, resnet18, pretrained=False)
        with learn.no_bar(), learn.no_logging():
            learn.fit_one_cycle(args.epochs, 1e-2)
        predictor = Predictor(learn, runtime="torch")
        load = RGBLoader(args.size)

        def batch(paths):
            return predictor._collate([predictor.prepare(load(p)) for p in paths]).numpy()

        sample = torch.rand(1, 3, args.size, args.size)
        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(learn.model.eval(), (sample,), buf, dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        fp32 = buf.getvalue()
        calib = np.concatenate([batch([p]) for p in ds.train[:: max(1, len(ds.train) // 32)][:32]])
        int8 = quantize(fp32, calib)  # classifier/int8.py: what the compile step serves
        models = {"fp32": fp32, "int8": int8}
        valid_x = [batch([p]) for p in ds.valid]
        valid_y = np.array([ds.vocab.index(p.parent.name) for p in ds.valid])
        probs = {}
        for name, blob in models.items():
            sess = session(blob, 2)
            probs[name] = np.concatenate([softmax(sess.run(None, {"input": x})[0]) for x in valid_x])
        preds = {name: p.argmax(1) for name, p in probs.items()}
        print(f"after training and quantizing: {load_average()}", flush=True)
        lines = ["| threads | fp32 ms/image | int8 ms/image | speed-up | load average |",
                 "|---:|---:|---:|---:|---|"]
        for threads in (1, 2):
            sessions = {name: session(blob, threads) for name, blob in models.items()}
            times = {name: [] for name in models}
            for sess in sessions.values():  # warm up
                sess.run(None, {"input": valid_x[0]})
            before = load_average()
            for _ in range(args.rounds):
                for name, sess in sessions.items():
                    t0 = time.perf_counter()
                    for x in valid_x[:args.runs]:
                        sess.run(None, {"input": x})
                    times[name].append((time.perf_counter() - t0) / args.runs)
            med = {n: statistics.median(t) * 1000 for n, t in times.items()}
            lines.append(f"| {threads} | {med['fp32']:.1f} ({min(times['fp32']) * 1000:.1f}-"
                         f"{max(times['fp32']) * 1000:.1f}) | {med['int8']:.1f} "
                         f"({min(times['int8']) * 1000:.1f}-{max(times['int8']) * 1000:.1f}) | "
                         f"x{med['fp32'] / med['int8']:.2f} | {before} -> {load_average()} |")
        acc = {n: float((p == valid_y).mean() * 100) for n, p in preds.items()}
        print("\n".join(lines))
        print(f"\nvalidation ({len(valid_y)} images): fp32 {acc['fp32']:.1f} %, int8 "
              f"{acc['int8']:.1f} %, top-1 agreement "
              f"{(preds['fp32'] == preds['int8']).mean() * 100:.1f} %, largest probability gap "
              f"{np.abs(probs['fp32'] - probs['int8']).max():.3f}; "
              f"model {len(fp32) / 2**20:.1f} MB -> {len(int8) / 2**20:.1f} MB")
        print(f"end: {load_average()}")


if __name__ == "__main__":
    main()
