"""The engines that can run a compiled ONNX graph on this CPU: onnxruntime f32, OpenVINO f32,
OpenVINO bf16 where the CPU computes in bf16 (AVX-512 BF16 or AMX), and onnxruntime and
OpenVINO on the graph's int8 copy where the compile step made one (classifier/int8.py).

An engine opens a graph (ONNX bytes or an .onnx file's path) with a number of intra-op threads
and gives back `forward(batch) -> (logits, features)` (float32 numpy, NCHW in; features are
the graph's second output, the pooled features classifier/drift.py uses, or None for a graph
compiled without them). Which one serves is chosen
by measurement (classifier/engine_choice.py); onnxruntime f32 is the one the compile step
checked against learn.predict, and what serves when nothing else qualifies.

OpenVINO is an optional package: the default image installs it (requirements.txt), the lean
image does not (180 MB would take it past its 500 MB goal), and there only onnxruntime runs.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.int8 import checked_int8

Forward = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]
DEFAULT_ENGINE = "onnxruntime-f32"


@dataclass(frozen=True)
class Engine:
    name: str  # what /model and the logs call it
    package: str  # the package it imports (and its distribution's name)
    precision: str  # "f32", "bf16" or "int8": what its arithmetic rounds to
    opener: Callable[[bytes | str, int], Forward]

    def open(self, graph: bytes | str, threads: int) -> Forward:
        return self.opener(graph, threads)

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def unavailable(self, graph: bytes | str) -> str | None:
        """Why this engine cannot run `graph` here (its package missing, no bf16 in the CPU, no
        int8 copy of the graph), or None. Asking OpenVINO starts its plugin: call this where no
        fork follows (the child process)."""
        if not self.installed():
            return f"{self.package} is not installed"
        if self.precision == "int8" and checked_int8(graph) is None:
            return "no int8 copy of this graph (made by python -m classifier.onnx_compile)"
        if self.precision == "bf16" and "BF16" not in openvino_capabilities():
            return "the CPU has no bf16 arithmetic (AVX-512 BF16 or AMX)"
        return None


def onnxruntime_forward(graph: bytes | str, threads: int) -> Forward:
    from classifier.onnx_model import make_session

    session = make_session(graph, threads)

    def forward(batch):
        logits, *features = session.run(None, {"input": batch})
        return logits, features[0] if features else None

    return forward


def openvino_opener(precision: str) -> Callable[[bytes | str, int], Forward]:
    """OpenVINO on the CPU with INFERENCE_PRECISION_HINT `precision`, one stream, `threads`
    threads, latency first (one request at a time, as the predictors' run lock serves).

    Its threads are not pinned to cores (OpenVINO pins them by default): each worker process
    pinned its own threads to the same cores, beside the unpinned threads that decode and
    answer, and the kernel could not spread them. Unpinned, two workers on 2 cores served 8
    clients 19-23 % more small photos (bf16: 77.6 against 65.0 req/s, p50 100 against 114 ms;
    int8: 109.3 against 88.7 req/s, p50 68 against 87 ms; 3 alternating rounds, 2026-12-06
    00:12, docs/measurements.md); one client alone was served as fast either way."""

    def open_graph(graph: bytes | str, threads: int) -> Forward:
        core = import_openvino().Core()
        model = core.read_model(graph if isinstance(graph, bytes) else str(Path(graph)))
        compiled = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False})
        request = compiled.create_infer_request()
        with_features = len(compiled.outputs) > 1

        def forward(batch):
            # the output buffers are reused by the next call: copy them out
            outputs = request.infer({0: batch})
            return (np.array(outputs[0], dtype=np.float32),
                    np.array(outputs[1], dtype=np.float32) if with_features else None)

        return forward

    return open_graph


def on_int8_copy(opener: Callable[[bytes | str, int], Forward]) -> Callable[[bytes | str, int], Forward]:
    """`opener` on the graph's int8 copy (classifier/int8.py) instead of the graph."""

    def open_int8(graph: bytes | str, threads: int) -> Forward:
        int8 = checked_int8(graph)
        if int8 is None:
            raise FileNotFoundError("no int8 copy of this graph")
        return opener(int8[0], threads)

    return open_int8


ENGINES = {engine.name: engine for engine in (
    Engine(DEFAULT_ENGINE, "onnxruntime", "f32", onnxruntime_forward),
    Engine("openvino-f32", "openvino", "f32", openvino_opener("f32")),
    Engine("openvino-bf16", "openvino", "bf16", openvino_opener("bf16")),
    Engine("onnxruntime-int8", "onnxruntime", "int8", on_int8_copy(onnxruntime_forward)),
    Engine("openvino-int8", "openvino", "int8", on_int8_copy(openvino_opener("f32"))),
)}


def openvino_capabilities() -> tuple[str, ...]:
    """What OpenVINO's CPU plugin says this CPU computes in (e.g. FP32, BF16, INT8)."""
    return tuple(import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def import_openvino():
    """The openvino module, imported without its usage telemetry.

    `import openvino` sends an "import" event to Google Analytics unless the user opted out,
    from a multiprocessing.Process: a fork of the importing process. In a gunicorn worker
    that fork is a copy of the worker, holding its listening socket and log pipe until the
    send gives up (a stopped server's port stayed taken, and a test waiting for its log hung);
    and a server has no business phoning home. Where openvino_telemetry cannot be imported,
    OpenVINO uses its own no-op stub (openvino/tools/ovc/telemetry_utils.py)."""
    sys.modules.setdefault("openvino_telemetry", None)  # None: `import` raises ImportError
    import openvino

    return openvino


# The CPU's vector and matrix units that change which engine is fastest, and how fast.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


def cpu_facts() -> dict:
    """The CPU's model name and which SPEED_FLAGS it has (the engine cache's key, and the
    line every benchmark prints beside its figures: harness/machine.py)."""
    model, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {"model": model, "flags": [flag for flag in SPEED_FLAGS if flag in flags]}


def package_versions() -> dict[str, str | None]:
    """The installed version of each engine's package (None: not installed)."""
    versions = {}
    for package in sorted({engine.package for engine in ENGINES.values()}):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions
