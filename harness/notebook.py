"""A learner exported the way a fastai notebook does it: the tutorial's DataBlock, resnet18,
`learn.export`, with none of our training code (no export.json, no get_x of ours).

It runs in a fresh interpreter, as a user's notebook would, so the pickle refers to fastai
alone. Weights are random (pretrained=False): nothing is downloaded.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

NOTEBOOK = """
import json, sys
from fastai.vision.all import *
path, out, opts = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
if opts["seed"] is not None:
    set_seed(opts["seed"], reproducible=True)
size = tuple(opts["size"]) if isinstance(opts["size"], list) else opts["size"]
block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
                  splitter=RandomSplitter(valid_pct=0.2, seed=42), get_y=parent_label,
                  item_tfms=Resize(size, method=opts["method"]),
                  batch_tfms=Normalize.from_stats(*imagenet_stats) if opts["normalize"] else None)
dls = block.dataloaders(path, bs=opts["bs"], num_workers=0)
learn = vision_learner(dls, resnet18, pretrained=False, metrics=error_rate)
if opts["epochs"]:
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(opts["epochs"])
learn.export(out)
"""


def export_like_a_notebook(data: Path, out: Path, size=32, method: str = "crop",
                           normalize: bool = False, epochs: int = 1, bs: int = 8,
                           seed: int | None = None, timeout: float = 600) -> Path:
    """Train `epochs` (0: untrained) on the labelled folder `data` and export to `out`.

    size: an int (square) or (height, width); method: fastai's Resize method ("crop",
    "squish", "pad"); normalize: add ImageNet normalisation as a batch transform;
    seed: the same weights on every run (fastai's set_seed), for tests that compare answers.
    """
    opts = {"size": list(size) if isinstance(size, tuple) else size, "method": method,
            "normalize": normalize, "epochs": epochs, "bs": bs, "seed": seed}
    result = subprocess.run([sys.executable, "-c", NOTEBOOK, str(data), str(out),
                             json.dumps(opts)], cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"the notebook export failed:\n{result.stderr[-2000:]}")
    return Path(out)
