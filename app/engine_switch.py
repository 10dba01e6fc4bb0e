"""The engine measured after the server serves: on a cache miss (a first start, or every cold
start where the disk does not survive) onnxruntime f32 answers at once, the engines are timed
in the background (once per machine: classifier/engine_cache.py), and each process switches
its model to the chosen engine between requests. /model's engine says "measuring" meanwhile.
"""
from __future__ import annotations

import logging
import threading

from app.event_loop import off_event_loop
from classifier.engine_cache import describe_choice
from classifier.engines import DEFAULT_ENGINE

log = logging.getLogger(__name__)


def measure_engines_later(model) -> threading.Event | None:
    """Start measuring `model`'s (an app.model_service.ServedModel) engines in the background,
    if its load left a measurement to run in this process; an Event set once it has ended and
    the model has switched, or None."""
    measurement, model.predictor.engine_measurement = model.predictor.engine_measurement, None
    if measurement is None:
        return None
    ended = threading.Event()
    # Not a daemon: the process's exit waits for it, as an engine cut off while it opens the
    # graph aborts the interpreter ("terminate called without an active exception").
    threading.Thread(target=_measure_and_switch, args=(model, measurement, ended),
                     name="engine-measurement").start()
    return ended


def _measure_and_switch(model, measurement, ended: threading.Event) -> None:
    # A greenlet under the served worker, so the measurement itself runs in a real thread:
    # the worker's subprocess module is not gevent's (app/worker.py), and waiting on the child
    # in the greenlet would stop the event loop (the worker never answered /readyz).
    try:
        try:
            choice = off_event_loop(measurement.run_once_per_machine)
        except Exception as exc:  # never a request's problem: f32 keeps serving
            log.exception("engine measurement failed; %s keeps serving", DEFAULT_ENGINE)
            choice = measurement.chosen([], None)
            choice["reason"] = (f"the measurement failed ({type(exc).__name__}: {exc}); "
                                f"{DEFAULT_ENGINE} serves")
        off_event_loop(_switch, model, choice)
    finally:
        ended.set()


def _switch(model, choice: dict) -> None:
    """Serve `choice` from the next request on, opened and warmed up first; f32 if it fails."""
    predictor = model.predictor
    predictor.use_engine(choice)
    if choice["engine"] != DEFAULT_ENGINE:
        try:
            predictor.warm_up()
        except Exception as exc:
            log.exception("engine %s failed to open here", choice["engine"])
            choice = {**choice, "engine": DEFAULT_ENGINE, "reason": (
                f"{choice['engine']} was chosen but failed to run here ({type(exc).__name__}); "
                f"{DEFAULT_ENGINE} serves")}
            predictor.use_engine(choice)
    model.info["engine"] = choice
    log.info("%s", describe_choice(choice))
