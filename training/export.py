"""What a finished run writes: one version folder, models/versions/<name>/, holding export.pkl,
export.json (with the sha256 of every other file), examples/, report/ and, when it compiles and
matches PyTorch, export.onnx + export.onnx.json.

Nothing is ever half-written: the folder is built in a hidden staging folder beside it (every
file fsynced) and renamed into place once, so a version is there whole or not at all, and a
failure leaves the versions before it as they were.
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

from classifier.model_files import _umask, fsync_file, metadata_path, sha256_file

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
             unsure: dict, command: str, test_set: dict, field_reference: dict) -> dict:
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
        # what serving's drift score compares live answers with (classifier/drift.py)
        "field_reference": field_reference,
        "history": progress.history,
        "dataset": ds.summary(),
        "test_set": test_set,
        "examples": {},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "fastai": fastai.__version__},
        "created_at": None,
        "command": command,
        "sha256": None,
    }


def write_version(learn, root: Path, meta: dict, dls, valid: list[Path], probs, targets,
                  started: float) -> Path:
    """The whole version, root/versions/<name>/, built in a staging folder beside it and renamed
    into place once: a crash leaves no version rather than half of one (classifier/versions.py)."""
    from classifier.versions import MODEL_FILE, VERSIONS, version_name
    from training import report

    parent = root / VERSIONS
    parent.mkdir(parents=True, exist_ok=True)
    # .export.<pid>.<random>.tmp: checkpoint.remove_stale_temps removes a killed run's.
    staging = Path(tempfile.mkdtemp(prefix=f".export.{os.getpid()}.", suffix=".tmp", dir=parent))
    try:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; the server may be another user
        model = staging / MODEL_FILE
        meta["model_file"] = model.name
        meta["examples"] = copy_examples(valid, probs, targets, meta["vocab"], staging / "examples")
        report.write_report(staging / "report", dls, meta, valid, probs, targets)
        export_model(learn, model, meta, started)
        meta["onnx"] = compile_graph(model)
        name = version_name(dt.datetime.fromisoformat(meta["created_at"]), meta["sha256"])
        meta["version"] = name
        meta["files"] = file_hashes(staging)
        metadata_path(model).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        for path in staging.rglob("*"):
            if path.is_file():
                fsync_file(path)
        final = parent / name
        os.rename(staging, final)  # refuses an existing non-empty folder: a version is written once
        fsync_dir(parent)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_model(learn, model: Path, meta: dict, started: float) -> None:
    """export.pkl, then export.json carrying its sha256 (both inside the staging folder)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn.export(model.resolve(), pickle_protocol=4)  # 4: "builtins", not py2 "__builtin__"
    meta["sha256"] = sha256_file(model)
    meta["created_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    meta["training"]["wall_time_s"] = round(time.time() - started, 1)
    metadata_path(model).write_text(json.dumps(meta, indent=2, default=str) + "\n")


def compile_graph(model: Path) -> dict:
    """The ONNX graph beside `model`, best effort: {"compiled": true, "gap": ...}, or
    {"compiled": false, "why_not": ...} when the graph is unsupported or fails its parity check
    (the version is still written; the default image serves it on PyTorch)."""
    from classifier.model_files import ModelLoadError
    from classifier.onnx_compile import CompileError, compile_model

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gap = compile_model(model)
    except (CompileError, ModelLoadError) as exc:
        print(f"no ONNX graph for this version: {exc}", flush=True)
        return {"compiled": False, "why_not": str(exc)}
    return {"compiled": True, "gap": gap}


def file_hashes(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file of a version but export.json (which holds them)."""
    return {path.relative_to(folder).as_posix(): sha256_file(path)
            for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name != metadata_path(folder / "export.pkl").name}


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
