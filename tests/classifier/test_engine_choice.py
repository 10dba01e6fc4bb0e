"""Which engine runs the compiled graph: the fastest within INFERENCE_PRECISION's budget, never one
outside it; measurements cached per graph and machine; an engine that cannot load is skipped."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from classifier.engine_cache import choose_engine
from classifier.engine_choice import Reference, measure, softmax
from classifier.engines import DEFAULT_ENGINE, ENGINES, Engine
from classifier.int8 import int8_path, quantize
from classifier.onnx_compile import export_graph
from harness import ROOT

ONNXRUNTIME = ENGINES[DEFAULT_ENGINE]


@pytest.fixture(scope="module")
def graph_and_reference():
    """A tiny network's ONNX graph (16 px, 3 classes) and its PyTorch answers on 6 inputs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 3)).eval()
    inputs = np.random.default_rng(0).normal(size=(6, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(inputs)).numpy()
    return export_graph(model, (16, 16)), Reference(inputs, softmax(logits))


def answering(name: str, precision: str, reference: Reference, change=lambda logits: logits,
              opened: list | None = None) -> Engine:
    """A fake engine that answers the reference's own logits (changed by `change`) from a table:
    faster than any real engine."""
    table = {x.tobytes(): np.log(p)[None].astype(np.float32)
             for x, p in zip(reference.inputs, reference.probabilities)}

    def open_graph(graph, threads):
        if opened is not None:
            opened.append(graph)
        return lambda batch: (change(table[batch[0].tobytes()]), None)  # (logits, features)

    return Engine(name, "onnxruntime", precision, open_graph)


def swap_top_two(logits):
    order = np.argsort(logits[0])
    out = logits.copy()
    out[0, order[-1]], out[0, order[-2]] = logits[0, order[-2]], logits[0, order[-1]]
    return out


def nudge(size: float):
    """Logits moved so probabilities change by about `size`, the top class kept."""
    return lambda logits: logits + np.array([[size * 4, 0, 0]], np.float32)


def choose(graph_and_reference, tmp_path, precision, *engines):
    graph, reference = graph_and_reference
    return choose_engine(graph, lambda: reference, 1, precision, tmp_path / "export.pkl",
                         engines=[ONNXRUNTIME, *engines])


@pytest.mark.parametrize("precision", ["auto", "exact"])
@pytest.mark.parametrize("change", [swap_top_two, nudge(0.05)], ids=["wrong-top-1", "gap-0.05"])
def test_a_fastest_engine_outside_the_budget_is_never_chosen(graph_and_reference, tmp_path,
                                                             precision, change):
    fake = answering("fake", "f32", graph_and_reference[1], change)
    choice = choose(graph_and_reference, tmp_path, precision, fake)
    rows = {row["engine"]: row for row in choice["candidates"]}
    assert rows["fake"]["ms"] < rows[DEFAULT_ENGINE]["ms"]  # it was the fastest
    assert choice["engine"] == DEFAULT_ENGINE, choice


def test_the_fastest_engine_within_the_budget_is_chosen(graph_and_reference, tmp_path):
    fake = answering("fake", "bf16", graph_and_reference[1], nudge(0.001))
    choice = choose(graph_and_reference, tmp_path, "auto", fake)
    assert choice["engine"] == "fake" and "fastest of 2 within the budget" in choice["reason"]


@pytest.mark.parametrize("precision, change, chosen", [
    ("f32", nudge(0.001), DEFAULT_ENGINE),  # f32 but 1e-3 away: outside exact's 1e-4
    ("bf16", nudge(0.0), DEFAULT_ENGINE),  # exact answers, but bf16 is never exact's
    ("f32", nudge(0.0), "fake"),  # f32 and within 1e-4: exact takes the faster one
])
def test_exact_keeps_1e4_parity(graph_and_reference, tmp_path, precision, change, chosen):
    fake = answering("fake", precision, graph_and_reference[1], change)
    choice = choose(graph_and_reference, tmp_path, "exact", fake)
    assert choice["engine"] == chosen, choice
    served = {row["engine"]: row for row in choice["candidates"]}[choice["engine"]]
    assert served["gap"] <= 1e-4 and served["precision"] == "f32"


def test_the_measurements_are_cached_until_the_graph_or_references_change(graph_and_reference,
                                                                          tmp_path):
    graph, reference = graph_and_reference
    opened = []
    fake = answering("fake", "f32", reference, opened=opened)

    def run(graph, reference):
        return choose_engine(graph, lambda: reference, 1, "auto", tmp_path / "export.pkl",
                             engines=[fake])

    first = run(graph, reference)
    assert first["measured"] != "cache" and len(opened) == 1
    again = run(graph, reference)
    assert again["measured"] == "cache" and len(opened) == 1  # not measured again
    assert again["candidates"] == first["candidates"]
    assert list(tmp_path.glob("engine-choice-*.json"))  # beside the model
    run(graph + b" ", reference)  # another model (its graph changed)
    assert len(opened) == 2
    fewer = Reference(reference.inputs[:3], reference.probabilities[:3])
    run(graph, fewer)  # other examples
    assert len(opened) == 3


def test_an_engine_that_fails_to_load_is_skipped_with_a_log_line(graph_and_reference, tmp_path,
                                                                caplog):
    def broken(graph, threads):
        raise RuntimeError("no such device")

    caplog.set_level(logging.WARNING, "classifier.engine_cache")
    choice = choose(graph_and_reference, tmp_path, "auto", Engine("broken", "onnxruntime", "f32",
                                                                  broken))
    assert choice["engine"] == DEFAULT_ENGINE
    assert {row["engine"]: row for row in choice["candidates"]}["broken"]["error"] == \
        "RuntimeError: no such device"
    assert "engine broken skipped: it failed to load or run the graph" in caplog.text


def test_every_engine_here_is_measured_in_a_child_process(graph_and_reference, tmp_path):
    """The real engines, as the server measures them: each is timed and scored, or says why not."""
    graph, reference = graph_and_reference
    choice = choose_engine(graph, lambda: reference, 1, "exact", tmp_path / "export.pkl")
    rows = {row["engine"]: row for row in choice["candidates"]}
    assert list(rows) == list(ENGINES)
    assert rows[DEFAULT_ENGINE]["agreement"] == 1.0 and rows[DEFAULT_ENGINE]["gap"] <= 1e-4
    for row in rows.values():
        assert "ms" in row or row.get("skipped") or row.get("error")
    assert rows[choice["engine"]]["precision"] == "f32"


def test_opening_openvino_forks_nothing_and_sends_nothing(graph_and_reference, tmp_path):
    """`import openvino` alone forks the process to send a usage event to Google Analytics
    (unless CI=true or the user opted out); in a gunicorn worker that fork held the port and
    the log pipe after the server stopped. A fresh interpreter, CI unset, a HOME with no
    opt-out file: opening an OpenVINO engine forks nothing and loads no telemetry."""
    pytest.importorskip("openvino")
    graph, reference = graph_and_reference
    (tmp_path / "graph.onnx").write_bytes(graph)
    script = f"""
import os, sys
forks = []
real_fork = os.fork
os.fork = lambda: forks.append(1) or real_fork()
import numpy as np
from classifier.engines import ENGINES
forward = ENGINES["openvino-f32"].open({str(tmp_path / "graph.onnx")!r}, 1)
forward(np.zeros((1, 3, 16, 16), np.float32))
print(len(forks), sys.modules.get("openvino_telemetry"))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0", "None"], done.stdout + done.stderr[-2000:]


def test_openvino_leaves_its_threads_unpinned(graph_and_reference, monkeypatch):
    """OpenVINO pins its threads to cores unless told not to: each worker pinned its own to the
    same cores, and 8 clients were served 19-23 % fewer photos (classifier/engines.py)."""
    from classifier import engines

    pytest.importorskip("openvino")
    openvino, compiled = engines.import_openvino(), []

    class Recording(openvino.Core):
        def compile_model(self, *args, **kwargs):
            model = super().compile_model(*args, **kwargs)
            compiled.append(model)
            return model

    monkeypatch.setattr(engines, "import_openvino",
                        lambda: type("openvino", (), {"Core": Recording}))
    graph, reference = graph_and_reference
    ENGINES["openvino-f32"].open(graph, 1)(reference.inputs[:1])
    assert [model.get_property("ENABLE_CPU_PINNING") for model in compiled] == [False]


def raise_top(size: float):
    """Logits changed so the top class's probability rises by about `size` (it stays on top)."""
    def change(logits):
        probs = softmax(logits)[0]
        top = int(probs.argmax())
        wanted = min(probs[top] + size, 0.999)
        out = logits.copy()
        out[0, top] += np.log(wanted / (1 - wanted) * (1 - probs[top]) / probs[top])
        return out
    return change


class WithInt8Copy(Engine):
    def unavailable(self, graph):
        return None  # as if the graph had its int8 copy


@pytest.mark.parametrize("precision, change, chosen", [
    ("auto", nudge(0.0), DEFAULT_ENGINE),  # int8 is never auto's, however close
    ("exact", nudge(0.0), DEFAULT_ENGINE),
    ("int8", raise_top(0.05), "fake-int8"),  # within int8's 0.1
    ("int8", raise_top(0.15), DEFAULT_ENGINE),  # outside it
    ("int8", swap_top_two, DEFAULT_ENGINE),  # another answer on one example
])
def test_int8_serves_only_where_admitted_and_within_its_budget(graph_and_reference, tmp_path,
                                                              precision, change, chosen):
    reference = graph_and_reference[1]
    table = {x.tobytes(): change(np.log(p)[None].astype(np.float32))  # changed once: still fastest
             for x, p in zip(reference.inputs, reference.probabilities)}
    fake = WithInt8Copy("fake-int8", "onnxruntime", "int8",
                        lambda graph, threads: lambda batch: (table[batch[0].tobytes()], None))
    choice = choose(graph_and_reference, tmp_path, precision, fake)
    rows = {row["engine"]: row for row in choice["candidates"]}
    assert rows["fake-int8"]["ms"] < rows[DEFAULT_ENGINE]["ms"]  # it was the fastest
    assert choice["engine"] == chosen, choice


def test_the_int8_engines_open_only_the_copy_the_sidecar_names(graph_and_reference, tmp_path):
    """The compile step records the int8 copy's sha256 in the graph's sidecar: a missing copy,
    or a stale one (another model's), is never opened; the recorded one answers, top-1 intact."""
    graph, reference = graph_and_reference
    path = tmp_path / "export.onnx"
    path.write_bytes(graph)
    int8 = quantize(graph, reference.inputs[::-1].copy())
    engine = ENGINES["onnxruntime-int8"]
    assert "no int8 copy" in engine.unavailable(str(path))
    int8_path(path).write_bytes(int8)
    sidecar = path.with_suffix(".onnx.json")
    sidecar.write_text(json.dumps({"int8_sha256": hashlib.sha256(b"another model").hexdigest()}))
    assert "no int8 copy" in engine.unavailable(str(path))
    with pytest.raises(FileNotFoundError):
        engine.open(str(path), 1)
    sidecar.write_text(json.dumps({"int8_sha256": hashlib.sha256(int8).hexdigest()}))
    assert engine.unavailable(str(path)) is None and engine.unavailable(graph) is not None
    row = measure(engine, str(path), reference, 1)
    assert row["precision"] == "int8" and row["agreement"] == 1.0, row
    assert 0 < row["gap"] < 0.1, row  # int8 arithmetic: close, not equal
