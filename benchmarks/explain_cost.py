"""What `?explain=1` (Grad-CAM) costs per /predict request, against a plain /predict.

    .venv/bin/python -m benchmarks.explain_cost                  # resnet18 at 224 px, made here
    .venv/bin/python -m benchmarks.explain_cost --model models/export.pkl --rounds 30

Without --model it builds an untrained fastai resnet18 at 224 px (the training CLI's
default architecture and size; weights do not change the timing) from a few generated
images, so nothing is downloaded. Requests go through the Flask app in this process (no
network), plain and explained alternating in rounds; it prints the median and spread of
each, and the load average before and after (figures from a busy machine are not
headlines).
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from harness.machine import load_average, machine_line


def make_model(folder: Path, size: int) -> Path:
    """An untrained resnet18 vision_learner export at `size` px (no download)."""
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        ImageBlock,
        RandomSplitter,
        Resize,
        get_image_files,
        parent_label,
        resnet18,
        vision_learner,
    )

    rng = np.random.default_rng(0)
    for label in ("cat", "dog", "fox"):
        (folder / "data" / label).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 255, (300, 400, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(folder / "data" / label / f"{i}.png")
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
                      splitter=RandomSplitter(valid_pct=0.3, seed=0), get_y=parent_label,
                      item_tfms=Resize(size))
    learn = vision_learner(block.dataloaders(folder / "data", bs=4, num_workers=0), resnet18,
                           pretrained=False)
    out = folder / "export.pkl"
    learn.export(out)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="an export.pkl (default: make one)")
    parser.add_argument("--size", type=int, default=224, help="input size of the made model")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--runtime", default="auto", choices=["auto", "onnx", "torch"])
    args = parser.parse_args(argv)

    from app import create_app
    from app.config import ENV_NAMES
    from app.model_service import model_service

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or make_model(Path(tmp), args.size)
        config = {name: "" for name in ENV_NAMES}
        config.update(MODEL_PATH=str(model.resolve()), INFERENCE_RUNTIME=args.runtime)
        app = create_app(config)
        client = app.test_client()
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (480, 640, 3))
                        .astype(np.uint8)).save(buf, "JPEG")
        photo = buf.getvalue()
        service = model_service(app)

        def timed(query: str) -> float:
            started = time.perf_counter()
            r = client.post("/predict" + query, data=photo, content_type="image/jpeg")
            elapsed = time.perf_counter() - started
            assert r.status_code == 200, r.get_json()
            return elapsed * 1000

        for query in ("", "?explain=1"):  # warm both paths (imports, first Grad-CAM)
            timed(query)
        before = machine_line()
        times: dict[str, list[float]] = {"plain": [], "explain=1": []}
        for _ in range(args.rounds):
            times["plain"].append(timed(""))
            times["explain=1"].append(timed("?explain=1"))
        after = load_average()

    print(f"model {model.name}, input {service.info['image_size']}, runtime "
          f"{service.predictor.runtime}, {args.rounds} rounds (plain and explained alternate)")
    print(f"before: {before}\nafter: {after}")
    print(f"{'request':<12} {'median ms':>10} {'min':>8} {'max':>8}")
    for name, values in times.items():
        print(f"{name:<12} {statistics.median(values):>10.1f} {min(values):>8.1f} "
              f"{max(values):>8.1f}")
    extra = [e - p for p, e in zip(times["plain"], times["explain=1"])]
    print(f"{'extra':<12} {statistics.median(extra):>10.1f} {min(extra):>8.1f} "
          f"{max(extra):>8.1f}   (explained minus plain, same round)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
