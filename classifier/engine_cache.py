"""Which engine serves a compiled graph on this machine: the cached choice, or measured once
per machine (classifier/engine_choice.py scores the engines).

The measured rows are cached in a JSON file keyed by the sha256 of the graph, its int8 copy
and the references, the CPU's model and flags, the engines' package versions and the thread
count; any change measures again. The server measures a cache miss after it serves
(app/engine_switch.py): onnxruntime f32 answers meanwhile, and one process per machine
measures (a lock file beside the cache) while the others wait for its cache file.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from classifier.engine_choice import (
    BUDGETS,
    CHILD_TIMEOUT_S,
    Reference,
    measure_all,
    measure_in_child,
    pick,
)
from classifier.engines import DEFAULT_ENGINE, ENGINES, Engine, cpu_facts, package_versions
from classifier.int8 import checked_int8
from classifier.model_files import write_json_atomic

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


def cache_file(model_path, graph_sha: str) -> Path:
    """Beside the model where its folder is writable, else in the temporary directory."""
    folder = Path(model_path).parent
    if not os.access(folder, os.W_OK):
        folder = Path(tempfile.gettempdir()) / "image-classifier-engines"
    return folder / f"engine-choice-{graph_sha[:16]}.json"


def graph_sha256(graph: bytes | str) -> str:
    data = graph if isinstance(graph, bytes) else Path(graph).read_bytes()
    return hashlib.sha256(data).hexdigest()


def choose_engine(graph: bytes | str, make_reference: Callable[[], Reference | None],
                  threads: int, precision: str, model_path, engines=None) -> dict:
    """The engine that serves `graph` and why: GET /model's "engine"; measured now on a cache
    miss (see plan_engine)."""
    choice, measurement = plan_engine(graph, make_reference, threads, precision, model_path, engines)
    return measurement.run() if measurement else choice


def plan_engine(graph: bytes | str, make_reference: Callable[[], Reference | None],
                threads: int, precision: str, model_path,
                engines=None) -> tuple[dict, Measurement | None]:
    """(choice, None) when the choice needs no measuring: the cache's rows match, or there is
    nothing to choose from. On a cache miss, (onnxruntime f32 "measuring", the Measurement to
    run). `make_reference()` gives what the engines are scored on (called only when there is
    a choice to make); `engines` are measured in this process (tests), None: every known
    engine, in a child process.
    """
    choice = {"engine": DEFAULT_ENGINE, "precision": precision, "measured": None, "candidates": []}
    int8 = functools.cache(lambda: checked_int8(graph))  # hashes the copy once, only if asked
    if engines is None and not any(engine.installed() and engine.precision in BUDGETS[precision].precisions
                                   and (engine.precision != "int8" or int8())
                                   for engine in ENGINES.values() if engine.name != DEFAULT_ENGINE):
        return {**choice, "reason": "the only engine here within the budget (the lean image has "
                "no other but int8); checked against learn.predict at compile"}, None
    reference = make_reference()
    if reference is None:
        return {**choice, "reason": "no reference answers to score other engines on (recompile "
                f"with python -m classifier.onnx_compile); {DEFAULT_ENGINE} serves"}, None
    graph_sha = graph_sha256(graph)
    key = {"format": CACHE_FORMAT, "graph_sha256": graph_sha, "reference_sha256": reference.sha256(),
           "int8_sha256": int8()[1] if int8() else None,
           "cpu": cpu_facts(), "packages": package_versions(), "threads": threads,
           "engines": [engine.name for engine in engines or ENGINES.values() if engine.installed()]}
    measurement = Measurement(graph, reference, threads, precision, key,
                              cache_file(model_path, graph_sha), engines)
    rows = cached_rows(measurement.cache, key)
    if rows is not None:
        return measurement.chosen(rows, "cache"), None
    return {**choice, "measured": "measuring", "reason": "the engines are being measured (no "
            f"cached choice for this graph and machine); {DEFAULT_ENGINE} serves meanwhile"}, measurement


@dataclass
class Measurement:
    """A cache miss: the engines still to time on this graph, and where the rows go."""
    graph: bytes | str
    reference: Reference
    threads: int
    precision: str
    key: dict
    cache: Path
    engines: list[Engine] | None  # None: every known engine, in a child process

    def chosen(self, rows: list[dict], measured: str | None) -> dict:
        engine, reason = pick(rows, self.precision)
        return {"engine": engine, "precision": self.precision, "reason": reason,
                "measured": measured, "candidates": rows}

    def run(self) -> dict:
        """Measure now, cache the rows (when any engine ran), and choose."""
        measured = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rows = (measure_all(self.engines, self.graph, self.reference, self.threads)
                if self.engines is not None
                else measure_in_child(self.graph, self.reference, self.threads))
        for row in rows:
            if "error" in row:
                log.warning("engine %s skipped: it failed to load or run the graph (%s)",
                            row["engine"], row["error"])
        if rows:
            try:
                self.cache.parent.mkdir(parents=True, exist_ok=True)
                write_json_atomic(self.cache, {"key": self.key, "measured": measured, "rows": rows})
            except OSError as exc:
                log.warning("engine choice not cached (%s); it is measured again at next start", exc)
        return self.chosen(rows, measured if rows else None)

    def run_once_per_machine(self, poll_s: float = 0.2) -> dict:
        """`run`, by the first process here to create the lock file beside the cache; the
        others wait for its cache file (f32 stays when it ends without one). A lock older
        than the child's timeout is a dead process's, and taken over."""
        lock = self.cache.with_suffix(".measuring")
        waited = False
        while True:
            rows = cached_rows(self.cache, self.key)
            if rows is not None:
                return self.chosen(rows, "cache")
            try:
                self.cache.parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                waited = True
                try:
                    if time.time() - lock.stat().st_mtime > CHILD_TIMEOUT_S + 30:
                        lock.unlink(missing_ok=True)
                        waited = False  # a dead process's: this one measures
                except OSError:
                    pass
                time.sleep(poll_s)
                continue
            except OSError as exc:  # no lock possible here: measure without one
                log.warning("no engine measurement lock (%s); measuring in this process", exc)
                return self.run()
            if waited and cached_rows(self.cache, self.key) is None:
                lock.unlink(missing_ok=True)
                log.warning("the process measuring the engines ended without a choice (see its "
                            "log); %s serves", DEFAULT_ENGINE)
                return self.chosen([], None)
            try:
                return self.run()
            finally:
                lock.unlink(missing_ok=True)


def describe_choice(choice: dict) -> str:
    """The start-up log's line for a choice: what serves, why, and every candidate's figures."""
    measured = "; ".join(
        f"{row['engine']} {row['ms']:.2f} ms, top-1 {row['agreement']:.0%}, gap {row['gap']:.1e}"
        if "ms" in row else f"{row['engine']} not used ({row.get('skipped') or row.get('error')})"
        for row in choice["candidates"])
    return (f"engine {choice['engine']} (INFERENCE_PRECISION={choice['precision']}): "
            f"{choice['reason']}; measured {choice['measured'] or 'never'}: {measured or 'nothing'}")


def cached_rows(path: Path, key: dict) -> list[dict] | None:
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return cached.get("rows") if isinstance(cached, dict) and cached.get("key") == key else None
