"""Model versions made by copying, and watching a server follow its pointer under load: what
the swap tests (tests/app/test_model_swap*.py) and benchmarks/swap_under_load.py share.

`make_version` copies a model folder (export.pkl and whatever lies beside it) into
models/versions/<name>/ with an export.json listing every file's sha256, as training writes
one; `classifier.versions.move_pointer` then promotes or rolls back without any training.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import requests

from classifier.model_files import sha256_file
from classifier.versions import MODEL_FILE, VERSIONS, move_pointer
from harness import ROOT
from harness.bench_assets import build_assets, upload_images
from harness.load import post_image


def make_version(root: Path, source_model: Path, name: str) -> Path:
    """models/versions/<name>/ from `source_model`'s folder (its export.pkl, export.json when
    there, examples/, report/, the ONNX graph); returns the version's export.pkl."""
    folder = root / VERSIONS / name
    source = source_model.parent
    folder.mkdir(parents=True)
    for item in source.iterdir():
        if item.name in (VERSIONS, "live.json", "history.jsonl", "test_set.json"):
            continue
        if item.is_dir():
            shutil.copytree(item, folder / item.name)
        elif item.name != "export.json" and (item.name.startswith("export.")
                                             or item == source_model):
            shutil.copy2(item, folder / (MODEL_FILE if item == source_model else item.name))
    meta_path = source_model.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    files = {p.relative_to(folder).as_posix(): sha256_file(p)
             for p in sorted(folder.rglob("*")) if p.is_file()}
    meta.update(version=name, sha256=files[MODEL_FILE], files=files)
    (folder / "export.json").write_text(json.dumps(meta, indent=2))
    return folder / MODEL_FILE


def make_rotated_version(root: Path, source_model: Path, name: str, work: Path) -> Path:
    """A version whose outputs are `source_model`'s with the classes rotated by one, so its
    top-1 class is never the source's: a candidate that disagrees on purpose. `work`: an empty
    folder for the changed export before it is copied in."""
    import torch

    from classifier.model_files import load_learner_checked

    learner, _ = load_learner_checked(source_model)
    head = learner.model[-1][-1]  # the classifier's final Linear
    order = torch.roll(torch.arange(head.out_features), 1)
    with torch.no_grad():
        head.weight.copy_(head.weight[order])
        if head.bias is not None:  # fastai's head has none
            head.bias.copy_(head.bias[order])
    learner.export(work / MODEL_FILE)
    return make_version(root, work / MODEL_FILE, name)


def bench_versions(work: Path, model: Path | None, size: int, names) -> tuple[Path, Path, list]:
    """(the model, models/ under `work` with `names` copied from it, 8 photos to post): the
    model is `model` or an untrained resnet18 at `size` px, with its compiled ONNX graph (the
    lean runtime serves it); the first name is live. What the benchmarks of versions share."""
    if model is None:
        model, uploads = build_assets(work / "assets", size, 8, ["small"])
        images = uploads["small"]
    else:
        images = upload_images("small", np.random.default_rng(0), 8)
    if not model.with_suffix(".onnx").is_file():
        subprocess.run([sys.executable, "-m", "classifier.onnx_compile", str(model)], cwd=ROOT,
                       check=True, capture_output=True)
    root = work / "models"
    for name in names:
        make_version(root, model, name)
    move_pointer(root, names[0], "promote")
    return model, root, images


class VersionProbe:
    """One more client beside the load: posts an image in a loop and records (time, version)
    of each answer, so a test can tell when every worker's answers carry a version."""

    def __init__(self, url: str, image):
        self.url, self.image = url, image
        self.answers: list[tuple[float, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> VersionProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:  # a connection per request: the kernel hands each to any worker
                with requests.Session() as session:
                    response = post_image(session, self.url, self.image, timeout=30,
                                          headers={"Connection": "close"})
                version = response.json().get("version") if response.ok else None
            except (requests.RequestException, ValueError):
                version = None
            self.answers.append((time.monotonic(), version))

    def wait_for(self, version: str, since: float, streak: int = 20,
                 timeout: float = 60.0) -> float:
        """Seconds from `since` until `streak` answers in a row (so every worker, the kernel
        spreading connections) carry `version`; TimeoutError past `timeout`."""
        deadline = since + timeout
        while time.monotonic() < deadline:
            run = 0
            for at, answered in self.answers:
                run = run + 1 if at >= since and answered == version else 0
                if run >= streak:
                    return at - since
            time.sleep(0.1)
        last = [v for _, v in self.answers[-streak:]]
        raise TimeoutError(f"answers did not settle on {version} within {timeout}s: {last}")
