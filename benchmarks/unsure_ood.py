"""How well the "not sure" threshold in export.json separates unfamiliar images from real answers.

    .venv/bin/python -m benchmarks.unsure_ood [MODEL.pkl]   # default: models/export.pkl (the digits demo)

Out-of-distribution images: random crops (32..400 px squares) of scikit-learn's two sample
photos (`sklearn.datasets.load_sample_images()`: a temple in China, a flower), plus synthetic
noise and flat colours. In-distribution: the validation split recorded in export.json.
Prints, with the machine's load average: the threshold, the share of correct validation answers
flagged, and the share of out-of-distribution images flagged ("unsure" = top-class confidence
< threshold, the serving rule).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from harness import ROOT
from harness.machine import load_average, machine_line

CROPS_PER_PHOTO, NOISE_IMAGES, SEED = 200, 100, 0


def photo_crops(rng) -> list[Image.Image]:
    from sklearn.datasets import load_sample_images

    crops = []
    for photo in load_sample_images().images:
        h, w = photo.shape[:2]
        for _ in range(CROPS_PER_PHOTO):
            side = int(rng.integers(32, min(h, w, 400)))
            y, x = rng.integers(0, h - side), rng.integers(0, w - side)
            crops.append(Image.fromarray(photo[y:y + side, x:x + side]))
    return crops


def synthetic(rng) -> list[Image.Image]:
    images = []
    for i in range(NOISE_IMAGES):
        if i % 3 == 0:
            pixels = rng.integers(0, 256, (64, 64, 3))
        elif i % 3 == 1:
            pixels = rng.normal(128, 60, (64, 64, 3)).clip(0, 255)
        else:
            pixels = np.broadcast_to(rng.integers(0, 256, 3), (64, 64, 3))
        images.append(Image.fromarray(pixels.astype(np.uint8)))
    return images


def flagged(predictor, images, threshold) -> float:
    probs = np.concatenate([predictor.probabilities(images[i:i + 64]) for i in range(0, len(images), 64)])
    return float((probs.max(axis=1) < threshold).mean())


def main(argv=None) -> None:
    from classifier.inference import Predictor
    from classifier.model_files import load_learner_checked
    from training.data import find_dataset
    from training.evaluate import choose_threshold, score

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default=str(ROOT / "models" / "export.pkl"))
    model = parser.parse_args(argv).model
    load_before = machine_line()
    learner, _ = load_learner_checked(model)
    meta = json.loads(Path(model).with_suffix(".json").read_text())
    t = meta["training"]
    ds = find_dataset(meta["dataset"]["root"], t["valid_pct"], t["seed"])
    predictor = Predictor(learner, runtime="torch")
    _, probs, targets = score(predictor, ds.valid, ds.vocab)
    unsure = meta.get("unsure") or choose_threshold(probs, targets)
    threshold = unsure["threshold"]
    rng = np.random.default_rng(SEED)
    correct = probs.argmax(axis=1) == targets
    rows = [("correct validation answers", int(correct.sum()),
             float((probs.max(axis=1)[correct] < threshold).mean())),
            ("wrong validation answers", int((~correct).sum()),
             float((probs.max(axis=1)[~correct] < threshold).mean()) if (~correct).any() else float("nan")),
            ("photo crops (sklearn sample images)", 2 * CROPS_PER_PHOTO, flagged(predictor, photo_crops(rng), threshold)),
            ("noise and flat colours", NOISE_IMAGES, flagged(predictor, synthetic(rng), threshold))]
    print(f"model {model}: {meta['arch']} {meta['image_size'][0]}px, classes {', '.join(meta['vocab'])}")
    print(f"threshold {threshold:.4f} ({unsure['method']}, alpha {unsure['alpha']})")
    print(f"{'images':<40}{'n':>6}{'flagged unsure':>16}")
    for name, n, rate in rows:
        print(f"{name:<40}{n:>6}{rate:>15.1%}")
    print(f"before: {load_before}\nafter: {load_average()}")


if __name__ == "__main__":
    main()
