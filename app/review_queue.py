"""The review queue (REVIEW_DIR): the images the server was not sure of, and a small random
sample (REVIEW_SAMPLE) of the others, kept for a person to label on /review (app/review.py).

An item is two files: REVIEW_DIR/<id>.jpg, the pixels the model saw (downscaled to its
input, re-encoded without metadata by feedback_store.pixels_only), and <id>.json, the
answer (top classes with probabilities), the model version and sha256, the time and why it
was kept. <id> is the JPEG's sha256, so a photo sent twice is queued once. Labelling an
item files it as a correction in FEEDBACK_DIR (feedback_store.save), where `python -m
training.train --extra` reads it, and removes it from the queue.

Capture stays off the request's path: the request shrinks the decoded image (in the decode
thread) and hands it to a bounded backlog; one background writer per process encodes and
stores it. A full backlog or a full queue (REVIEW_MAX_FILES, REVIEW_MAX_MB) drops the new
item, counted in classifier_review_dropped_total; it never fails a request.
Every file operation is in `QueueFolder`, so another storage (s3://) replaces one class.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import queue
import random
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from flask import g, has_request_context
from PIL import Image

from app import feedback_store
from app.errors import ApiError
from app.event_loop import off_event_loop
from app.review_metrics import record_dropped, record_queued, record_reviewed
from classifier.model_files import atomic_path

log = logging.getLogger(__name__)
BACKLOG = 32  # images waiting for the writer, per process; past it new ones are dropped
ITEM_ID = re.compile(r"[0-9a-f]{64}")
CLAIMED = ".claimed"  # an item's record while one reviewer files it


class QueueFolder:
    """The queue's files in one folder: every read, write and removal the queue makes."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _entries(self) -> list[os.DirEntry]:
        """The folder's entries; none before the first item made it (a GET of the queue
        answered 500 there)."""
        try:
            with os.scandir(self.folder) as entries:
                return list(entries)
        except FileNotFoundError:
            return []

    def usage(self) -> tuple[int, int]:
        """(bytes, items) in the folder."""
        total, items = 0, 0
        for entry in self._entries():
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
                items += entry.name.endswith(feedback_store.SUFFIX)
        return total, items

    def add(self, item_id: str, jpeg: bytes, record: bytes) -> bool:
        """Store an item (image first, record last: a record always has its image); False
        if it is there already."""
        image = self.folder / f"{item_id}{feedback_store.SUFFIX}"
        if image.exists():
            return False
        with atomic_path(image) as tmp:
            tmp.write_bytes(jpeg)
        with atomic_path(self.folder / f"{item_id}.json") as tmp:
            tmp.write_bytes(record)
        return True

    def oldest(self, count: int, skip: frozenset = frozenset()) -> list[str]:
        """The ids of up to `count` items, oldest first, leaving out `skip`."""
        found = []
        for entry in self._entries():
            item_id = entry.name.removesuffix(".json")
            if entry.name.endswith(".json") and ITEM_ID.fullmatch(item_id) and item_id not in skip:
                found.append((entry.stat(follow_symlinks=False).st_mtime_ns, item_id))
        return [item_id for _, item_id in sorted(found)[:count]]

    def record(self, item_id: str) -> dict | None:
        try:
            return json.loads((self.folder / f"{item_id}.json").read_bytes())
        except (FileNotFoundError, ValueError):
            return None

    def image(self, item_id: str) -> bytes | None:
        try:
            return (self.folder / f"{item_id}{feedback_store.SUFFIX}").read_bytes()
        except FileNotFoundError:
            return None

    def claim(self, item_id: str) -> bool:
        """Take an item for one reviewer (an atomic rename): False if another took it."""
        try:
            os.rename(self.folder / f"{item_id}.json", self.folder / f"{item_id}{CLAIMED}")
        except FileNotFoundError:
            return False
        return True

    def release(self, item_id: str) -> None:
        """Put a claimed item back (filing it failed)."""
        os.rename(self.folder / f"{item_id}{CLAIMED}", self.folder / f"{item_id}.json")

    def remove(self, item_id: str) -> None:
        for name in (f"{item_id}{feedback_store.SUFFIX}", f"{item_id}{CLAIMED}"):
            (self.folder / name).unlink(missing_ok=True)


@dataclass
class Candidate:
    """One classified image the request offers to the queue."""
    image: Image.Image  # already shrunk (shrink)
    record: dict


def shrink(image: Image.Image, side: int | None) -> Image.Image:
    """A copy of the decoded image whose shorter side is the model's input `side` (never
    larger than it came)."""
    short = min(image.size)
    if side is None or short <= side:
        return image.copy()
    scale = side / short
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.BILINEAR, reducing_gap=2.0)


class ReviewQueue:
    """The queue of one server process: what to keep, the background writer, and the
    reviewer's actions (next items, file as a correction, discard)."""

    def __init__(self, settings, rng: random.Random | None = None):
        self.settings = settings
        self.files = QueueFolder(settings.review_dir)
        self._rng = rng or random.Random()
        self._backlog: queue.Queue | None = None
        self._pid: int | None = None

    # -- capture (in the request) ------------------------------------------------------
    def wanted(self, unsure: bool) -> str | None:
        """Why an answer is kept ("unsure", "sample") or None."""
        if unsure:
            return "unsure"
        if self._rng.random() < self.settings.review_sample:
            return "sample"
        return None

    def looking(self, on_image, model):
        """`on_image` (the caller's look at each decoded image) plus a copy shrunk to the
        model's input side for the queue: each result becomes (the caller's, the copy)."""
        size = model.predictor.image_size
        side = max(size) if size else None

        def both(image):
            return (on_image(image) if on_image else None), shrink(image, side)
        return both

    def consider(self, prepared: list, predictions, model) -> list:
        """After a batch of (filename, item, extra from `looking`): offer the images wanted;
        the batch with the callers' own extras back. The threshold is the server's (a
        request's ?threshold= does not count)."""
        threshold = model.info["unsure"]["threshold"]
        request_id = g.get("request_id") if has_request_context() else None
        theirs = []
        for (name, item, (extra, small)), prediction in zip(prepared, predictions):
            theirs.append((name, item, extra))
            reason = self.wanted(prediction.is_unsure(threshold))
            if reason is not None:
                self.offer(Candidate(small, {
                    "time": now(), "reason": reason, "label": prediction.label,
                    "confidence": prediction.confidence,
                    "top": prediction.top(len(prediction.probabilities)),
                    "version": model.version, "model_sha256": model.card.sha256,
                    "request_id": request_id}))
        return theirs

    def offer(self, candidate: Candidate) -> None:
        """Hand a kept image to this process's writer; never blocks, never raises."""
        try:
            self._writer_backlog().put_nowait(candidate)
        except queue.Full:
            record_dropped("busy")

    def _writer_backlog(self) -> queue.Queue:
        # Started in the process that serves: a thread does not survive gunicorn's fork.
        if self._pid != os.getpid():
            self._backlog, self._pid = queue.Queue(BACKLOG), os.getpid()
            threading.Thread(target=self._write_forever, args=(self._backlog,),
                             name="review-writer", daemon=True).start()
        return self._backlog

    def _write_forever(self, backlog: queue.Queue) -> None:
        while True:
            candidate = backlog.get()
            try:
                off_event_loop(self.store, candidate)
            except Exception:  # a full disk, a bad folder: logged, the server goes on
                log.exception("could not queue an image for review in %s",
                              self.settings.review_dir)
                record_dropped("error")
            finally:
                backlog.task_done()

    def store(self, candidate: Candidate) -> bool:
        """Encode and store one item unless the queue is full; whether it was stored."""
        jpeg = feedback_store.pixels_only(candidate.image)
        item_id = hashlib.sha256(jpeg).hexdigest()
        record = json.dumps({**candidate.record, "id": item_id}).encode("utf-8")
        settings, folder = self.settings, self.settings.review_dir
        folder.mkdir(parents=True, exist_ok=True)
        used, items = self.files.usage()
        if items + 1 > settings.review_max_files or \
                used + len(jpeg) + len(record) > settings.review_max_bytes:
            record_dropped("full")
            return False
        if self.files.add(item_id, jpeg, record):
            record_queued(candidate.record["reason"])
            return True
        return False

    def wait_idle(self) -> None:
        """Block until the writer has stored everything handed to it (tests)."""
        if self._backlog is not None and self._pid == os.getpid():
            self._backlog.join()

    # -- review (the /review page) -----------------------------------------------------
    def next_items(self, count: int, skip: frozenset = frozenset()) -> list[dict]:
        """The records of up to `count` queued items, oldest first."""
        records = (self.files.record(item_id) for item_id in self.files.oldest(count, skip))
        return [record for record in records if record is not None]

    def image(self, item_id: str) -> bytes:
        data = self.files.image(item_id) if ITEM_ID.fullmatch(item_id) else None
        if data is None:
            raise ApiError("review_item_gone", "That image is no longer in the review queue.")
        return data

    def label(self, item_id: str, label: str, client: str) -> dict:
        """File the item under `label` as a correction (FEEDBACK_DIR) and take it out of the
        queue; its correction record. 507 `feedback_full` leaves it queued."""
        record = self._claim(item_id)
        try:
            jpeg = self.image(item_id)
            correction = {"time": now(), "client": client, "label": label,
                          "predicted": record["label"], "confidence": record["confidence"],
                          "model_sha256": record["model_sha256"],
                          "request_id": record.get("request_id"), "review": record["reason"]}
            saved = feedback_store.save(self.settings, label, jpeg, correction)
        except BaseException as exc:
            off_event_loop(self.files.release, item_id)
            if isinstance(exc, OSError):  # as /feedback answers it (app/feedback.py)
                log.error("cannot file a reviewed image under %s: %s",
                          self.settings.feedback_dir, exc)
                raise ApiError("feedback_unavailable", "The correction could not be saved "
                               "(FEEDBACK_DIR is not writable); the image stays queued.") from None
            raise
        off_event_loop(self.files.remove, item_id)
        record_reviewed("labelled")
        return saved

    def discard(self, item_id: str) -> None:
        self._claim(item_id)
        off_event_loop(self.files.remove, item_id)
        record_reviewed("discarded")

    def _claim(self, item_id: str) -> dict:
        record = self.files.record(item_id) if ITEM_ID.fullmatch(item_id) else None
        if record is None or not off_event_loop(self.files.claim, item_id):
            raise ApiError("review_item_gone", "That image is no longer in the review queue "
                           "(someone else labelled or discarded it).")
        return record


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
