"""A shadow candidate (SHADOW_MODEL): another version answers a share of live requests off the
request path, so its agreement with the served model can be watched before it is promoted.

A shadowed request's prepared images (or, where the shadow prepares images differently, its
own preparation of the same decoded photo) and the live answers' labels go into a small queue
after the live answer is made; one consumer per worker runs the shadow on them in a real
thread of its own, at a lower CPU priority (nice +10) and on one inference thread, and counts
what it finds. The queue holds at most QUEUE_REQUESTS requests: one that arrives while it is
full is not shadowed (counted as dropped), so the shadow never holds up an answer nor grows
memory. Nothing of the shadow reaches an answer.

Start-up is refused when the shadow does not fit the memory limit beside the served model
(app/machine.py shadow_fits); a shadow that fails to load or check is logged, counted and
shown in /model's `shadow`, and the server serves without it.
"""
from __future__ import annotations

import logging
import os
import queue
import random
import threading

from prometheus_client import Counter

from app import machine
from app.event_loop import gevent_active, off_event_loop
from app.metrics import server_registry
from classifier import shadow_field
from classifier.model_files import ModelLoadError

log = logging.getLogger(__name__)
QUEUE_REQUESTS = 4  # shadowed requests waiting at most: MAX_BATCH prepared images each
NICENESS = 10       # the shadow thread's CPU priority below the request threads'

PAIR = ["live", "shadow"]
IMAGES = Counter(shadow_field.IMAGES + "_total", "Images the shadow model answered beside "
                 "the live one, by the shadow's top-1 class.", [*PAIR, "label"])
UNSURE = Counter(shadow_field.UNSURE + "_total", "The shadow's \"not sure\" answers (below "
                 "its own threshold), by its top-1 class.", [*PAIR, "label"])
AGREED = Counter(shadow_field.AGREED + "_total", "Images whose top-1 class from the shadow "
                 "equals the live model's.", PAIR)
REQUESTS = Counter(shadow_field.REQUESTS + "_total", "Requests picked for the shadow: "
                   "shadowed, dropped (its queue was full) or failed.", [*PAIR, "outcome"])
REFUSED = Counter("classifier_shadow_refused_total", "Shadow versions that failed to load or "
                  "to check (the reason is in the log and /model's shadow.refused).", ["shadow"])


class Shadow:
    """SHADOW_MODEL in one server: the loaded model (None when refused) and its queue."""

    def __init__(self, version: str, share: float, model=None, refused: str | None = None):
        self.version, self.share, self.model, self.refused = version, share, model, refused
        self._pid: int | None = None
        self._queue: queue.Queue | None = None
        self._pool = None

    @property
    def info(self) -> dict:
        """/model's `shadow`."""
        return {"version": self.version, "share": self.share, "serving": self.model is not None,
                "refused": self.refused}

    def take(self, live) -> Ticket | None:
        """A ticket for this request with the live ServedModel `live`, for SHADOW_SHARE of
        requests (None for the others, and when no shadow is loaded)."""
        if self.model is None or random.random() >= self.share:
            return None
        reuse = (type(live.predictor) is type(self.model.predictor)
                 and live.predictor.preparation == self.model.predictor.preparation)
        return Ticket(self, reuse)

    def send(self, live_version: str, items: list, live_labels: list[str]) -> None:
        """Queue the shadow's work for one request, or count it dropped when the queue is full."""
        try:
            self._work_queue().put_nowait((live_version, items, live_labels))
        except queue.Full:
            REQUESTS.labels(live_version, self.version, "dropped").inc()

    def drain(self) -> None:
        """Wait until the queued requests have been shadowed (tests and benchmarks)."""
        if self._queue is not None:
            self._queue.join()

    def _work_queue(self) -> queue.Queue:
        """This process's queue and consumer, made on first use (after gunicorn's fork, and
        after gevent's patching, so both are the worker's own and greenlet-aware there)."""
        if self._pid != os.getpid():
            self._pid, self._queue = os.getpid(), queue.Queue(maxsize=QUEUE_REQUESTS)
            if gevent_active():
                from gevent.threadpool import ThreadPool

                self._pool = ThreadPool(1)  # the shadow's own thread: none of the requests'
            threading.Thread(target=self._consume, name="shadow", daemon=True).start()
        return self._queue

    def _consume(self) -> None:
        while True:
            live_version, items, live_labels = self._queue.get()
            try:
                predictions = off_event_loop(self._predict, items, pool=self._pool)
            except Exception:  # the consumer must outlive anything the shadow does
                log.exception("the shadow %s failed on a request", self.version)
                REQUESTS.labels(live_version, self.version, "failed").inc()
            else:
                self._record(live_version, predictions, live_labels)
            finally:
                self._queue.task_done()

    def _predict(self, items):
        """In the shadow's thread, below the request threads' priority (Linux: per thread)."""
        try:
            os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), NICENESS))
        except OSError:
            pass
        return self.model.predictor.predict_prepared(items)

    def _record(self, live_version: str, predictions, live_labels: list[str]) -> None:
        threshold = self.model.info["unsure"]["threshold"]
        for prediction, live_label in zip(predictions, live_labels):
            IMAGES.labels(live_version, self.version, prediction.label).inc()
            if prediction.is_unsure(threshold):
                UNSURE.labels(live_version, self.version, prediction.label).inc()
            if prediction.label == live_label:
                AGREED.labels(live_version, self.version).inc()
        REQUESTS.labels(live_version, self.version, "shadowed").inc()


class Ticket:
    """One shadowed request: reuses the live model's prepared images when the shadow prepares
    images the same way, else prepares its own from each decoded photo (`watch`)."""

    def __init__(self, shadow: Shadow, reuse: bool):
        self.shadow, self.reuse = shadow, reuse
        self.items: list = []
        self.failed = False

    def watch(self, on_image):
        """The decode hook for this request: `on_image`, plus the shadow's own preparation of
        the photo when it cannot reuse the live one's."""
        if self.reuse:
            return on_image

        def both(image):
            try:
                self.items.append(self.shadow.model.predictor.prepare(image))
            except Exception:  # never the live answer's problem
                log.exception("the shadow %s cannot prepare an image", self.shadow.version)
                self.failed = True
            return on_image(image) if on_image else None

        return both

    def send(self, live_version: str, live_items: list, predictions) -> None:
        if self.failed:
            REQUESTS.labels(live_version, self.shadow.version, "failed").inc()
            return
        self.shadow.send(live_version, live_items if self.reuse else self.items,
                         [p.label for p in predictions])


def shadow_ticket(shadow: Shadow | None, live, on_image):
    """(this request's Ticket, or None when it is not shadowed; the decode hook to use)."""
    ticket = shadow.take(live) if shadow else None
    return ticket, ticket.watch(on_image) if ticket else on_image


def open_shadow(service) -> Shadow | None:
    """SHADOW_MODEL loaded beside the served model, or None when unset. ModelLoadError (start-up
    refused) when it does not fit the memory limit; any other failure is a refused Shadow."""
    settings = service.settings
    if settings.shadow_model is None:
        return None
    name, path = settings.shadow_model, settings.shadow_path
    check_room(settings, service.model.path, path)
    try:
        model = service.open(path, threads=1)
    except ModelLoadError as exc:
        REFUSED.labels(name).inc()
        log.error("SHADOW_MODEL %s refused, serving without a shadow: %s", name, exc)
        return Shadow(name, settings.shadow_share, refused=str(exc))
    log.info("shadow %s answers %.0f%% of requests beside %s", name,
             100 * settings.shadow_share, service.model.version)
    return Shadow(name, settings.shadow_share, model)


def check_room(settings, live_path, shadow_path) -> None:
    """ModelLoadError when the shadow would leave a worker less than the smallest body budget."""
    limit, image = machine.memory_limit(), machine.installed_image()
    try:
        live_bytes = live_path.stat().st_size
    except OSError:
        live_bytes = 0
    needed = machine.shadow_bytes(shadow_path, settings.workers)
    if not machine.shadow_fits(limit, image, settings.workers, live_bytes, needed,
                               settings.max_image_pixels):
        raise ModelLoadError(
            f"SHADOW_MODEL={settings.shadow_model} does not fit this machine's memory limit "
            f"({limit // machine.MB} MB): with it (about {needed // machine.MB} MB for "
            f"{settings.workers} worker(s)) a worker would have less than "
            f"{machine.MIN_BODY_BUDGET_MB} MB left for uploads. Unset SHADOW_MODEL, or lower "
            "WEB_CONCURRENCY or MAX_IMAGE_PIXELS, or use a machine with more memory.")


def shadow_figures(shadow: Shadow | None) -> dict:
    """GET /shadow: the shadow's state, and its figures for every (live, shadow) pair this
    server has counted, all workers together."""
    return {"shadow": shadow.info if shadow else None,
            "pairs": shadow_field.field_pairs(server_registry().collect())}
