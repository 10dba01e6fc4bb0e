"""The demo dataset: scikit-learn's 1,797 handwritten digit scans as data/digits/<label>/*.png.

Written once (and again only if the folder is incomplete), so the demo goes
through exactly the same folder pipeline as a user's photos. The scans are
8x8 pixels with 17 grey levels; we store them as 8-bit grayscale with dark ink
on a white background, the way a photo of a handwritten digit looks.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

DEMO_DIR = Path("data/digits")


def write_digits(root: str | os.PathLike = DEMO_DIR) -> Path:
    """Write the digits under root/<digit>/<n>.png unless all of them are already there."""
    from sklearn.datasets import load_digits

    root = Path(root)
    digits = load_digits()
    existing = sum(1 for _ in root.glob("*/*.png")) if root.is_dir() else 0
    if existing == len(digits.target):
        return root
    for n, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        path = root / str(label) / f"digit_{n:04d}.png"
        if path.exists():
            continue
        grey = (255 - pixels * (255 / 16)).round().clip(0, 255).astype(np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")  # hidden, so a half-written file is ignored
        Image.fromarray(grey, "L").save(tmp, format="PNG")
        os.replace(tmp, path)
    return root
