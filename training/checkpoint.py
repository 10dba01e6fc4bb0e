"""The checkpoint files of a training run, beside --out: where they live, how they are written
(atomically), read back for `--resume` and removed; and the staging files a killed run left.

models/checkpoints/export.pth holds the run's state after its last finished epoch (written by
training.fit.TrainingRun); export.best.pth the best epoch's weights when --early-stop is on.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from training import UsageError

CHECKPOINT_DIR = "checkpoints"  # beside --out; models/checkpoints/ is kept out of the image


def checkpoint_path(out: Path) -> Path:
    return out.parent / CHECKPOINT_DIR / f"{out.stem}.pth"


def best_weights_path(out: Path) -> Path:
    return out.parent / CHECKPOINT_DIR / f"{out.stem}.best.pth"


def write(state, path: Path) -> None:
    """torch.save, atomically: a kill mid-write leaves the previous file as it was. Under
    `accelerate launch` only rank 0 writes (the ranks hold the same state)."""
    import torch

    from training import distributed
    if not distributed.is_main():
        return

    from classifier.model_files import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load(out: Path) -> dict:
    """The checkpoint for `--resume --out out`; a missing, unreadable or too old one: UsageError."""
    import torch

    path = checkpoint_path(out)
    if not path.is_file():
        raise UsageError(f"--resume: no checkpoint at {path} (an interrupted run with "
                         f"--out {out} writes one).")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UsageError(f"--resume: checkpoint {path} is unreadable ({type(exc).__name__}).") from None
    if not isinstance(saved, dict) or "config" not in saved:
        raise UsageError(f"--resume: checkpoint {path} was written by an older version; "
                         "start a new run without --resume.")
    return saved


def discard(out: Path) -> None:
    """Remove the checkpoint and the best weights (a finished run, or one that failed exporting)."""
    for path in (checkpoint_path(out), best_weights_path(out)):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        checkpoint_path(out).parent.rmdir()  # only when empty


def remove_stale_temps(out: Path, started: float) -> None:
    """Remove the staging files and folders (.export.<pid>.<random>.tmp and the like, beside
    --out, its versions and its checkpoint) that a killed run (SIGKILL, power loss) left behind. An entry
    whose pid is a live process other than this one is another run's and is kept; one
    without a pid (older versions) only when it predates this run."""
    from classifier import versions
    from training import test_set

    # atomic_path's names: .<file>.<pid>.<random>.tmp; only the files a run writes are ours to
    # remove (--out may sit in a folder other programs use too)
    ours = tuple(f".{name}." for name in (out.stem, versions.POINTER, test_set.FILE))
    for folder in (out.parent, out.parent / "versions", checkpoint_path(out).parent):
        for entry in folder.glob(".*.tmp"):
            if folder == out.parent and not entry.name.startswith(ours):
                continue
            pid = entry.name[:-len(".tmp")].split(".")[-2]
            if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
                continue
            if not pid.isdigit() and entry.lstat().st_mtime >= started:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            print(f"removed {entry}, left by an interrupted run", flush=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
