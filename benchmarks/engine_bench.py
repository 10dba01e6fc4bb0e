"""Each engine that can run the compiled graph here, on a resnet18 at 224 px: speed, accuracy, memory.

    .venv/bin/python -m benchmarks.engine_bench [--rounds 5] [--seconds 2] [--images 16]

For every engine in classifier/engines.py (onnxruntime f32, OpenVINO f32, OpenVINO bf16 where
the CPU has it, and onnxruntime and OpenVINO on an int8 copy calibrated on other photos): ms
per image at batch 1 with 1 and 2 threads, images/s with 2 streams of 1 thread each (two
requests at once, as two workers run them), top-1 agreement and the largest probability gap
against PyTorch f32 on generated photos, and the peak RSS of a fresh process that opens the
engine and runs one image (what a worker adds). The network is torchvision's
resnet18 with untrained weights (nothing downloaded; weights do not change speed). Engines run
in turn within each round, so a neighbour's load falls on all alike; median and spread over
rounds, with the CPU, its flags and the load before and after.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from classifier.engine_choice import softmax
from classifier.engines import ENGINES
from classifier.int8 import int8_path, quantize
from harness.bench_assets import make_photo
from harness.machine import load_average, machine_line

MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def normalised(rng, size: int, images: int) -> np.ndarray:
    """`images` generated photos at `size` px, normalised as the network takes them (NCHW)."""
    photos = [np.asarray(make_photo(rng).resize((size, size)), np.float32) / 255
              for _ in range(images)]
    return ((np.stack(photos) - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)


def build(size: int, images: int, folder: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """resnet18's graph at `size` px, `images` normalised photos and PyTorch's probabilities."""
    import torch
    import torchvision

    from classifier.onnx_compile import export_graph

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    rng = np.random.default_rng(0)
    inputs = normalised(rng, size, images)
    with torch.no_grad():
        reference = softmax(model(torch.from_numpy(inputs)).numpy())
    graph = folder / "resnet18.onnx"
    graph.write_bytes(export_graph(model, (size, size)))
    # the int8 engines' copy, calibrated on other photos than the scored ones
    int8 = quantize(graph.read_bytes(), normalised(rng, size, images))
    int8_path(graph).write_bytes(int8)
    graph.with_suffix(".onnx.json").write_text(json.dumps({"int8_sha256": hashlib.sha256(int8).hexdigest()}))
    return graph, inputs, reference


def ms_per_image(forward, one: np.ndarray, runs: int) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        forward(one)
    return (time.perf_counter() - start) * 1000 / runs


def streams_per_second(forwards, one: np.ndarray, seconds: float) -> float:
    """Images per second with each forward in its own thread, all at once."""
    done = [0] * len(forwards)
    stop = time.perf_counter() + seconds

    def run(i):
        while time.perf_counter() < stop:
            forwards[i](one)
            done[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(forwards))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / seconds


def peak_rss_mb(engine: str, graph: Path, size: int) -> float:
    """Peak RSS of a fresh process that opens `engine` on the graph and runs one image."""
    # VmHWM, not ru_maxrss: a forked child's ru_maxrss starts at its parent's (this process's)
    code = ("import sys, numpy as np; from classifier.engines import ENGINES; "
            "f = ENGINES[sys.argv[1]].open(sys.argv[2], 1); "
            f"f(np.zeros((1, 3, {size}, {size}), np.float32)); "
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])")
    done = subprocess.run([sys.executable, "-c", code, engine, str(graph)], capture_output=True,
                          text=True, check=True)
    return int(done.stdout.split()[-1]) / 1024


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20, help="images timed per cell and round")
    parser.add_argument("--seconds", type=float, default=2.0, help="per streams cell and round")
    parser.add_argument("--images", type=int, default=16, help="photos scored for agreement")
    args = parser.parse_args(argv)

    print(f"before: {machine_line()}", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="engine-bench-"))
    graph, inputs, reference = build(args.size, args.images, folder)
    engines, skipped = {}, {}
    for name, engine in ENGINES.items():
        why = engine.unavailable(str(graph))
        if why:
            skipped[name] = why
            continue
        engines[name] = {threads: engine.open(str(graph), threads) for threads in (1, 2)}
        engines[name]["stream"] = engine.open(str(graph), 1)
    one = inputs[:1]
    scores = {}
    for name, forwards in engines.items():
        probs = np.concatenate([softmax(forwards[1](x[None])[0]) for x in inputs])
        scores[name] = (float(np.mean(probs.argmax(1) == reference.argmax(1))),
                        float(np.abs(probs - reference).max()))
        for forward in forwards.values():  # warm-up: first calls allocate
            forward(one)
    cells = {(name, cell): [] for name in engines for cell in ("1 thread", "2 threads", "2 streams")}
    for round_ in range(args.rounds):
        for name, forwards in engines.items():
            cells[name, "1 thread"].append(ms_per_image(forwards[1], one, args.runs))
            cells[name, "2 threads"].append(ms_per_image(forwards[2], one, args.runs))
            cells[name, "2 streams"].append(
                streams_per_second([forwards[1], forwards["stream"]], one, args.seconds))
        print(f"round {round_ + 1}/{args.rounds} done, {load_average()}", flush=True)
    memory = {name: peak_rss_mb(name, graph, args.size) for name in engines}

    print(f"\nresnet18 at {args.size} px, batch 1, {args.rounds} rounds; after: {machine_line()}\n")
    print("| engine | 1 thread, ms | 2 threads, ms | 2 streams x 1 thread, img/s | top-1 agreement "
          "| largest gap | peak RSS, MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")

    def cell(values):
        return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"

    for name in engines:
        agreement, gap = scores[name]
        print(f"| {name} | {cell(cells[name, '1 thread'])} | {cell(cells[name, '2 threads'])} | "
              f"{cell(cells[name, '2 streams'])} | {agreement:.0%} | {gap:.1e} | {memory[name]:.0f} |")
    for name, why in skipped.items():
        print(f"| {name} | not here: {why} | | | | | |")


if __name__ == "__main__":
    main()
