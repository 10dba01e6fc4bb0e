"""What a finished run writes beside --out: export.pkl, export.json, examples/ and report/.

Nothing is ever half-written: export.pkl and export.json are both written and fsynced before
either is renamed into place (the pkl first), and examples/ and report/ are built in a hidden
staging folder and swapped in whole. A failure leaves the previous model as it was.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from pathlib import Path

EXAMPLES_PER_CLASS = 3


def portable(learn):
    """Strip what only training needs, so the pickle names nothing but fastai, torch and
    classifier.images (never training/ or __main__: the serving image has neither)."""
    from fastai.callback.progress import ProgressCallback

    learn.remove_cbs([cb for cb in learn.cbs if type(cb).__module__.startswith(("training", "__main__"))])
    if not any(isinstance(cb, ProgressCallback) for cb in learn.cbs):
        learn.add_cb(ProgressCallback())
    learn.logger = print
    learn.path, learn.model_dir = Path("."), "models"
    return learn


def metadata(config, ds, progress, *, lr_source: str, resumed: bool, metrics: dict,
             unsure: dict, command: str) -> dict:
    """export.json's content; the fields filled in while writing are None here."""
    import fastai
    import torch
    import torchvision

    return {
        "format": 1,
        "model_file": None,
        "vocab": ds.vocab,
        "arch": config.arch,
        "image_size": [config.size, config.size],
        "pretrained": ("imagenet" if config.weights is None else f"weights:{config.weights}")
        if config.fine_tune else False,
        "training": {**dataclasses.asdict(config),
                     "method": "fine_tune" if config.fine_tune else "fit_one_cycle",
                     "epochs_run": len(progress.history), "lr_source": lr_source,
                     "best_epoch": progress.best_epoch, "resumed": resumed, "wall_time_s": None},
        "metrics": metrics,
        "unsure": unsure,
        "history": progress.history,
        "dataset": ds.summary(),
        "examples": {},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "fastai": fastai.__version__},
        "created_at": None,
        "command": command,
        "sha256": None,
    }


def write_all(learn, out: Path, meta: dict, dls, valid: list[Path], probs, targets,
              started: float) -> None:
    """examples/ and report/ in a staging folder, then the model pair, then the two swaps."""
    from training import report

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.stem}.{os.getpid()}.", suffix=".tmp", dir=out.parent))
    try:
        meta["model_file"] = out.name
        meta["examples"] = copy_examples(valid, probs, targets, meta["vocab"], staging / "examples")
        report.write_report(staging / "report", dls, meta, valid, probs, targets)
        export_pair(learn, out, meta, started)
        replace_dir(staging / "examples", out.parent / "examples")
        replace_dir(staging / "report", out.parent / "report")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_pair(learn, out: Path, meta: dict, started: float) -> None:
    """export.pkl and its export.json, both written and fsynced before either is renamed into
    place, the pkl first: a crash leaves a mismatched pair only between two renames."""
    from classifier.model_files import (
        atomic_path,
        fsync_file,
        metadata_path,
        sha256_file,
    )

    # atomic_path renames on exit; the inner one (the pkl) exits first.
    with atomic_path(metadata_path(out)) as tmp_json, atomic_path(out) as tmp_pkl:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            learn.export(tmp_pkl.resolve(), pickle_protocol=4)  # 4: "builtins", not py2 "__builtin__"
        meta["sha256"] = sha256_file(tmp_pkl)
        meta["created_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        meta["training"]["wall_time_s"] = round(time.time() - started, 1)
        tmp_json.write_text(json.dumps(meta, indent=2, default=str) + "\n")
        fsync_file(tmp_pkl)  # the slow part (tens of MB), before any rename;
        fsync_file(tmp_json)  # atomic_path's own fsyncs then find nothing left to write


def replace_dir(new: Path, final: Path) -> None:
    """Swap a freshly written folder into place (two renames; the old one is then removed)."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def copy_examples(valid: list[Path], probs, targets, vocab: list[str], dest: Path) -> dict:
    """A few validation images per class, as examples/<label>/<file>; correctly classified
    ones first, so a click on an example shows what the model does well."""
    chosen: dict[str, list[str]] = {label: [] for label in vocab}
    order = sorted(range(len(valid)), key=lambda i: probs[i].argmax() != targets[i])
    for i in order:
        label, path = vocab[targets[i]], valid[i]
        if len(chosen[label]) < EXAMPLES_PER_CLASS:
            (dest / label).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / label / path.name)
            chosen[label].append(f"{label}/{path.name}")
    return {label: files for label, files in chosen.items() if files}
