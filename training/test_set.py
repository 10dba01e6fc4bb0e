"""The frozen test set: the images every version of a models/ folder is scored on.

The first version made in a models/ folder records its test images (DATA_DIR's test/ folder,
or --test-pct of the training split when there is none) by content hash, in
models/test_set.json, and keeps a copy of each under models/test_set/<label>/, so that later
runs, `training.compare` and `training.promote` find the same images wherever the data went
(on a fly volume too). Every later run keeps images with those bytes out of training and
validation, whatever their name or folder (--extra included), and scores on the frozen images:
two versions' test scores then come from the same images, none of which either trained on.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import tempfile
from pathlib import Path

from classifier.model_files import write_json_atomic
from training import UsageError
from training.data import Dataset, content_hash, label_of, random_split

FILE = "test_set.json"
FOLDER = "test_set"


def read(root: Path) -> dict | None:
    """models/test_set.json, or None before the first version."""
    path = root / FILE
    if not path.exists():
        return None
    try:
        frozen = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} cannot be read ({type(exc).__name__}); restore it from a "
                         "backup: it defines the test every version is compared on.") from None
    if not isinstance(frozen, dict) or not isinstance(frozen.get("images"), list):
        raise UsageError(f"{path} has no list of images.")
    return frozen


def frozen_images(root: Path, frozen: dict, vocab) -> list[Path]:
    """The frozen images' copies under models/test_set/, each checked against its sha256."""
    paths = []
    for image in frozen["images"]:
        path = root / image["path"]
        if image["label"] not in vocab:
            raise UsageError(f"The frozen test set ({root / FILE}) has class '{image['label']}', "
                             f"which the model's classes ({', '.join(vocab)}) lack; train into "
                             "another models folder (--out) for a new set of classes.")
        if not path.is_file() or content_hash(path) != image["sha256"]:
            raise UsageError(f"{path} is missing or changed since the test set was frozen "
                             f"(sha256 {image['sha256'][:12]}...); restore it.")
        paths.append(path)
    return paths


def apply(ds: Dataset, root: Path, frozen: dict | None, test_pct: float, seed: int) -> tuple[Dataset, dict]:
    """The dataset this run trains, validates and tests on, and what the report says about it.

    Before the first version (`frozen` None): DATA_DIR's test/ images, or test_pct of the
    training split, become the test set (frozen by `record` once the version is written).
    Afterwards: every image whose bytes are a frozen one's leaves train, valid and extra,
    and the test split is the frozen images."""
    if frozen is None:
        if not ds.test:
            train, test = random_split(ds.train, test_pct, seed)
            ds = dataclasses.replace(ds, train=train, test=test)
        return ds, {"frozen_now": len(ds.test), "excluded": 0, "file": str(root / FILE)}
    hashes = {image["sha256"] for image in frozen["images"]}
    kept, excluded = {}, 0
    for split in ("train", "valid", "extra"):
        kept[split] = [p for p in getattr(ds, split) if content_hash(p) not in hashes]
        excluded += len(getattr(ds, split)) - len(kept[split])
    for split in ("train", "valid"):
        if not kept[split]:
            raise UsageError(f"Every {split} image of {ds.root} is in the frozen test set "
                             f"({root / FILE}); add new images.")
    test = frozen_images(root, frozen, ds.vocab)
    return (dataclasses.replace(ds, **kept, test=test),
            {"frozen_now": 0, "excluded": excluded, "frozen": len(test), "file": str(root / FILE),
             "since": frozen.get("version")})


def record(root: Path, test: list[Path], version: str) -> None:
    """Freeze the first version's test images: copies under models/test_set/<label>/ (named by
    content, so two files with the same bytes are one image), then test_set.json, last."""
    if not test or (root / FILE).exists():
        return
    staging = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.", suffix=".tmp", dir=root))
    images = {}
    try:
        for path in test:
            digest = content_hash(path)
            name = Path(label_of(path)) / f"{digest[:16]}{path.suffix.lower()}"
            if digest not in images:
                (staging / name.parent).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, staging / name)
                images[digest] = {"sha256": digest, "label": label_of(path),
                                  "path": f"{FOLDER}/{name.as_posix()}", "source": str(path)}
        os.chmod(staging, 0o755)
        shutil.rmtree(root / FOLDER, ignore_errors=True)  # a copy left without its json
        os.replace(staging, root / FOLDER)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json_atomic(root / FILE, {
        "version": version, "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "images": sorted(images.values(), key=lambda i: i["path"])})


def describe(info: dict) -> str:
    """One console line about the test set of this run."""
    if info["frozen_now"]:
        return f"test set: {info['frozen_now']} images, frozen in {info['file']} for every later version"
    if "frozen" not in info:
        return "test set: none (no test/ folder and no images left for --test-pct)"
    return (f"test set: the {info['frozen']} frozen images of {info['file']}; {info['excluded']} "
            "image(s) with the same bytes kept out of training and validation")
