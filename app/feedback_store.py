"""Where corrections are kept (FEEDBACK_DIR): pixels without metadata, under a quota, one
JSON line each, written and fsynced off the event loop.

The image is stored as the model decoded it (oriented, at the size it decodes to), re-encoded
as a JPEG: whatever the upload carried besides pixels (EXIF with GPS, XMP, comments, ICC)
never reaches the disk. It is named by its content, FEEDBACK_DIR/<label>/<sha256>.jpg, the
folder layout `python -m training.train DATA --extra FEEDBACK_DIR` reads.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from pathlib import Path

from app.errors import ApiError
from app.event_loop import off_event_loop
from classifier.model_files import atomic_path

LOG_NAME = "feedback.jsonl"
SUFFIX = ".jpg"
# Quality 95 without chroma subsampling: a second JPEG generation that training cannot tell.
JPEG_OPTIONS = {"quality": 95, "subsampling": 0}
# One quota check and write at a time per process; O_APPEND keeps workers' lines whole.
_write_lock = threading.Lock()


def pixels_only(image) -> bytes:
    """The decoded image as a JPEG that holds nothing but its pixels."""
    pixels = image.convert("RGB")  # a copy: the decoded image keeps its own
    pixels.info.clear()  # Pillow would write the upload's comment (and more) back out
    buf = io.BytesIO()
    pixels.save(buf, "JPEG", **JPEG_OPTIONS)
    return buf.getvalue()


def usage(folder: Path) -> tuple[int, int]:
    """(bytes, image files) under `folder`: its files and those one folder down."""
    total, files = 0, 0
    with os.scandir(folder) as top:
        for entry in top:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
            elif entry.is_dir(follow_symlinks=False):
                with os.scandir(entry.path) as inner:
                    for item in inner:
                        if item.is_file(follow_symlinks=False):
                            total += item.stat(follow_symlinks=False).st_size
                            files += 1
    return total, files


def append_line(log_path: Path, line: bytes) -> None:
    """One line, written with a single append so concurrent workers never interleave."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def save(settings, label: str, jpeg: bytes, record: dict) -> dict:
    """Store `jpeg` under `label` and log `record` (completed with the image's path and
    sha256), or raise 507 `feedback_full`. Runs off the event loop; OSError goes up."""
    return off_event_loop(_save, settings, label, jpeg, record)


def _save(settings, label: str, jpeg: bytes, record: dict) -> dict:
    folder = settings.feedback_dir
    digest = hashlib.sha256(jpeg).hexdigest()
    path = folder / label / f"{digest}{SUFFIX}"
    record = {**record, "image": path.relative_to(folder).as_posix(), "sha256": digest}
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    folder.mkdir(parents=True, exist_ok=True)
    with _write_lock:
        used, files = usage(folder)
        new = not path.exists()
        if used + len(line) + (len(jpeg) if new else 0) > settings.feedback_max_bytes \
                or files + new > settings.feedback_max_files:
            raise ApiError("feedback_full", "This server's store of corrections is full "
                           f"(at most {settings.feedback_max_mb:g} MB and "
                           f"{settings.feedback_max_files} images); it takes no more "
                           "until someone makes room.")
        if new:
            with atomic_path(path) as tmp:
                tmp.write_bytes(jpeg)
        append_line(folder / LOG_NAME, line)
    return record


def check_label(label: str | None, vocab: list[str], folder: Path) -> str:
    """`label` if it is one of the model's classes and a safe folder name under `folder`;
    400 `invalid_label` otherwise (also for /review's corrections)."""
    if not label:
        raise ApiError("invalid_label", f"Say which class is right: a `label` field or "
                       f"?label=, one of {', '.join(vocab)}.")
    if label not in vocab:
        raise ApiError("invalid_label", f"{label[:80]!r} is not one of the model's "
                       f"classes: {', '.join(vocab)}.")
    target = (folder / label).resolve()
    if target.parent != folder.resolve() or label.startswith("."):
        raise ApiError("invalid_label", f"{label[:80]!r} cannot be stored as a folder "
                       "name.")
    return label
