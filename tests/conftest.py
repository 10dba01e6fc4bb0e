"""Fixtures shared by every test group: tiny generated datasets and models trained on them.

Everything is made here, offline, in seconds: no weights or data are downloaded.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def make_image_folder(root: Path, per_class: int = 16, size=(48, 40), seed: int = 0) -> Path:
    """DATA_DIR/<label>/<n>.png: a coloured square on noise, easy to learn in one epoch."""
    rng = np.random.default_rng(seed)
    for label, colour in COLOURS.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, (size[1], size[0], 3)).astype(np.uint8)
            x, y = rng.integers(0, 12, 2)
            pixels[y:y + 24, x:x + 24] = colour
            Image.fromarray(pixels).save(folder / f"{label}_{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


NOTEBOOK_EXPORT = textwrap.dedent("""
    # The plain tutorial way (seed 000), trained from scratch: no export.json, no get_x of ours.
    import sys
    from fastai.vision.all import *
    path, out = Path(sys.argv[1]), Path(sys.argv[2])
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
                      splitter=RandomSplitter(valid_pct=0.2, seed=42), get_y=parent_label,
                      item_tfms=Resize(32))
    dls = block.dataloaders(path, bs=8, num_workers=0)
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=error_rate)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(1)
    learn.export(out)
""")


@pytest.fixture(scope="session")
def notebook_export(image_folder, tmp_path_factory) -> Path:
    """A learner exported by the seed tutorial's own code, as a user's notebook would."""
    out = tmp_path_factory.mktemp("notebook") / "export.pkl"
    subprocess.run([sys.executable, "-c", NOTEBOOK_EXPORT, str(image_folder), str(out)],
                   check=True, cwd=ROOT, capture_output=True)
    return out


def run_training(*args, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`python -m training.train ARGS` from the repository root, output captured."""
    return subprocess.run([sys.executable, "-m", "training.train", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="session")
def trained_model(image_folder, tmp_path_factory) -> Path:
    """models/export.pkl trained by our own CLI (from scratch, 32 px), once per session.

    Beside it: export.json (metadata, sha256), examples/<label>/ and report/.
    """
    out = tmp_path_factory.mktemp("trained") / "models" / "export.pkl"
    result = run_training(image_folder, "--no-pretrained", "--size", 32, "--epochs", 1,
                          "--bs", 8, "--no-augment", "--lr", "1e-2", "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out
