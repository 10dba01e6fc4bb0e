"""Each gunicorn worker follows models/live.json: a promoted or rolled-back version is loaded
beside the one serving, checked, warmed up and switched to between requests, with no restart.

The pointer is looked at every MODEL_POLL_SECONDS (a stat of live.json, on the worker's event
loop) and at once on SIGHUP (the master forwards its SIGHUP to every worker: gunicorn.conf.py).
Loading runs in one of the worker's real threads, so requests keep being answered meanwhile,
each on the model it started with (app/model_service.py ServedModel). A version served from
its checked graph (its parity with learn.predict checked when training compiled it) has its
PyTorch model for explanations loaded in that thread too, before the switch. Workers of one server
load a new version one at a time (a lock file beside the master's pid), so the machine holds at
most one model more than usual while a swap is under way; a swap back to the version the master
preloaded (a rollback) takes that model again, shared, checked and warm. A version that fails to load or to
check is refused: the old one keeps serving and the log, /model's `refused` and the metric
classifier_model_versions_refused_total say so; it is tried again when the pointer moves again
or on the next SIGHUP. With MODELS_URL, each poll first brings MODEL_PATH's folder in line with
the bucket's live.json (classifier/model_bucket.py: one small GET, and a new version's files
when it names one); a bucket that does not answer is logged and the current version serves on.
"""
from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

from app.event_loop import off_event_loop
from classifier.model_bucket import pull
from classifier.model_files import ModelLoadError
from classifier.versions import POINTER, VersionError, pointer_root, served_model_path

log = logging.getLogger(__name__)
WAKE_STEP = 0.1  # seconds between looks at the SIGHUP flag


def live_model_path(model_path) -> Path:
    """The export.pkl that the pointer beside MODEL_PATH names now (MODEL_PATH without one)."""
    model_path = Path(model_path)
    return served_model_path(pointer_root(model_path) / model_path.name)


class PointerFollower:
    """Follows the pointer for one worker's ModelService (see the module's doc)."""

    def __init__(self, service, interval: float):
        self.service = service
        self.interval = interval
        self.pointer = pointer_root(service.settings.model_path) / POINTER
        self._seen = self._pointer_state()
        self._wake = False
        self._pull_failing = False

    def _pointer_state(self):
        try:
            st = os.stat(self.pointer)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def wake(self) -> None:
        """SIGHUP: look at the pointer now, and retry a refused version. Signal-handler safe."""
        self._wake = True

    def start(self) -> None:
        """Serve what the pointer names now (before the first request), then keep following."""
        self.follow()
        threading.Thread(target=self._run, name="pointer-follower", daemon=True).start()

    def _run(self) -> None:
        while True:
            waited = 0.0
            while waited < self.interval and not self._wake:
                time.sleep(WAKE_STEP)
                waited += WAKE_STEP
            forced, self._wake = self._wake, False
            self._pull()
            state = self._pointer_state()
            if forced or state != self._seen:
                self._seen = state
                try:
                    self.follow()
                except Exception:  # the follower must outlive anything a version does
                    log.exception("following %s failed", self.pointer)

    def _pull(self) -> None:
        """MODELS_URL: copy the bucket's live version here; log once per outage if we cannot."""
        url = self.service.settings.models_url
        if not url:
            return
        try:
            pull(url, self.pointer.parent)
        except (OSError, VersionError) as exc:
            if not self._pull_failing:
                log.warning("pid %d: MODELS_URL %s: %s; the current version serves on",
                            os.getpid(), url, exc)
            self._pull_failing = True
            return
        if self._pull_failing:
            log.info("pid %d: MODELS_URL %s answers again", os.getpid(), url)
        self._pull_failing = False

    def follow(self) -> bool:
        """Switch to the version the pointer names if it is not the one served; True if so."""
        service = self.service
        try:
            target = live_model_path(service.settings.model_path)
        except VersionError as exc:
            service.refuse(None, str(exc))
            return False
        if target == service.model.path:
            return False
        version = target.parent.name
        log.info("pid %d: live.json names %s; loading it beside %s", os.getpid(), version,
                 service.model.version)
        try:
            model = service.preloaded if target == service.preloaded.path else \
                off_event_loop(self._load_one_at_a_time, target)
        except ModelLoadError as exc:
            service.refuse(version, str(exc))
            return False
        service.switch(model)
        return True

    def _load_one_at_a_time(self, target: Path):
        """In a real thread: wait for the other workers' swaps, then open and warm up."""
        lock = Path(tempfile.gettempdir()) / f"classifier-swap-{os.getppid()}.lock"
        with open(lock, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                model = self.service.open(target)
                try:
                    model.predictor.warm_up()
                except Exception as exc:
                    raise ModelLoadError(f"warm-up failed: {type(exc).__name__}: "
                                         f"{str(exc)[:200]}") from None
                if model.explainer is not None:  # explains from its first request
                    model.explainer.load()
                return model
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def start_following(service) -> PointerFollower:
    """In a gunicorn worker, after its warm-up: follow the pointer from now on."""
    service.follower = PointerFollower(service, service.settings.model_poll_seconds)
    service.follower.start()
    return service.follower
