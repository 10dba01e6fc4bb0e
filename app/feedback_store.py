"""Where corrections are kept (FEEDBACK_DIR): pixels without metadata, under a quota, one
JSON line each, written and fsynced off the event loop.

The image is stored as the model decoded it (oriented, at the size it decodes to), re-encoded
as a JPEG: whatever the upload carried besides pixels (EXIF with GPS, XMP, comments, ICC)
never reaches the disk. It is named by its content, FEEDBACK_DIR/<label>/<sha256>.jpg, the
folder layout `python -m training.train DATA --extra FEEDBACK_DIR` reads.

FEEDBACK_DIR may be a bucket (s3://...) that several servers share (classifier/storage.py):
there each log line is an object of its own, feedback-<time>-<random>.jsonl, since a bucket
cannot append; an image is written before its line, so a logged correction has its image.
"""
from __future__ import annotations

import hashlib
import io
import json
import threading

from app.errors import ApiError
from app.event_loop import off_event_loop
from classifier.storage import Store

LOG_NAME = "feedback.jsonl"
SUFFIX = ".jpg"
# Quality 95 without chroma subsampling: a second JPEG generation that training cannot tell.
JPEG_OPTIONS = {"quality": 95, "subsampling": 0}
# One quota check and write at a time per process; O_APPEND keeps workers' lines whole.
# Servers sharing a bucket check the quota each on its own, so together they may pass it
# by a few corrections (one each at the same moment).
_write_lock = threading.Lock()


def pixels_only(image) -> bytes:
    """The decoded image as a JPEG that holds nothing but its pixels."""
    pixels = image.convert("RGB")  # a copy: the decoded image keeps its own
    pixels.info.clear()  # Pillow would write the upload's comment (and more) back out
    buf = io.BytesIO()
    pixels.save(buf, "JPEG", **JPEG_OPTIONS)
    return buf.getvalue()


def store_of(settings) -> Store:
    """FEEDBACK_DIR as a Store: a folder, or a bucket's prefix that several servers share."""
    return Store(settings.feedback_dir)


def usage(store: Store) -> tuple[int, int]:
    """(bytes, image files) in `store`: its files and those one folder down."""
    total, files = 0, 0
    for name, size in store.files().items():
        depth = name.count("/")
        if depth <= 1:
            total += size
            files += depth
    return total, files


def save(settings, label: str, jpeg: bytes, record: dict) -> dict:
    """Store `jpeg` under `label` and log `record` (completed with the image's path and
    sha256), or raise 507 `feedback_full`. Runs off the event loop; OSError goes up."""
    return off_event_loop(_save, settings, label, jpeg, record)


def _save(settings, label: str, jpeg: bytes, record: dict) -> dict:
    store = store_of(settings)
    digest = hashlib.sha256(jpeg).hexdigest()
    name = f"{label}/{digest}{SUFFIX}"
    record = {**record, "image": name, "sha256": digest}
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    with _write_lock:
        used, files = usage(store)
        new = not store.exists(name)
        if used + len(line) + (len(jpeg) if new else 0) > settings.feedback_max_bytes \
                or files + new > settings.feedback_max_files:
            raise ApiError("feedback_full", "This server's store of corrections is full "
                           f"(at most {settings.feedback_max_mb:g} MB and "
                           f"{settings.feedback_max_files} images); it takes no more "
                           "until someone makes room.")
        if new:
            store.write_bytes(name, jpeg)
        store.append_line(LOG_NAME, line)  # after the image: a logged record has its image
    return record


def check_label(label: str | None, vocab: list[str]) -> str:
    """`label` if it is one of the model's classes and a safe folder name in the store (one
    level, not hidden); 400 `invalid_label` otherwise (also for /review's corrections)."""
    if not label:
        raise ApiError("invalid_label", f"Say which class is right: a `label` field or "
                       f"?label=, one of {', '.join(vocab)}.")
    if label not in vocab:
        raise ApiError("invalid_label", f"{label[:80]!r} is not one of the model's "
                       f"classes: {', '.join(vocab)}.")
    if "/" in label or "\\" in label or label.startswith("."):
        raise ApiError("invalid_label", f"{label[:80]!r} cannot be stored as a folder "
                       "name.")
    return label
