"""Which engine runs the compiled graph: the fastest one on this machine within an accuracy budget.

Each engine this machine has (classifier/engines.py) is timed on the graph (batch 1, the served
thread count) and scored against the model's reference answers (learn.predict's, recorded by
the compile step, or the PyTorch model's) on its validation examples (examples/<label>/*; the
compile step's generated check images when it has none): top-1 agreement and the largest
probability gap. INFERENCE_PRECISION picks the budget:

- `auto`: 100 % top-1 agreement and a gap of at most 0.01 (bf16 qualifies where it holds);
- `exact`: f32 engines only, gap at most 1e-4 (the parity the compile step checks);
- `int8`: int8 engines admitted too, 100 % top-1 agreement and a gap of at most 0.1 (the
  user trades probabilities a few points off for speed; docs/serving.md).

The fastest qualifying engine serves; with none, onnxruntime f32 (checked at compile). The
timings run in a child process, so the loading process (a preloading gunicorn master, which
forks the workers) never starts OpenVINO's thread pool. classifier/engine_cache.py caches the
results per graph and machine and chooses.

    python -m classifier.engine_choice JOB_DIR   # the child: job.json + reference.npz in, results.json out
"""
from __future__ import annotations

import hashlib
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from classifier.engines import DEFAULT_ENGINE, ENGINES, Engine
from classifier.image_files import find_image_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    precisions: tuple[str, ...]  # the engines' arithmetic it admits
    gap: float  # the largest probability difference from the reference
    text: str


BUDGETS = {
    "auto": Budget(("f32", "bf16"), 0.01, "100 % top-1 agreement and probability gap <= 0.01"),
    "exact": Budget(("f32",), 1e-4, "f32 only, 100 % top-1 agreement and gap <= 1e-4"),
    "int8": Budget(("f32", "bf16", "int8"), 0.1,
                   "int8 admitted, 100 % top-1 agreement and probability gap <= 0.1"),
}
PRECISIONS = tuple(BUDGETS)  # INFERENCE_PRECISION's choices
TIMED_SECONDS, MIN_RUNS, MAX_RUNS = 0.5, 5, 40  # per engine: enough for a stable median
CHILD_TIMEOUT_S = 300
GENERATED_SHAPES = ((64, 48), (48, 64), (37, 91), (300, 200), (20, 20))  # (width, height)


@dataclass(frozen=True)
class Reference:
    """What the network is scored on: its inputs and the answers it must give."""
    inputs: np.ndarray  # (n, 3, height, width) float32, normalised as the network takes them
    probabilities: np.ndarray  # (n, classes) float64: learn.predict's (or PyTorch's) answers

    def sha256(self) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(self.inputs).tobytes())
        digest.update(np.ascontiguousarray(self.probabilities, dtype=np.float64).tobytes())
        return digest.hexdigest()


def generated_images() -> dict[str, Image.Image]:
    """Noise images of shapes that need cropping or padding: the compile step's own checks."""
    rng = np.random.default_rng(0)
    return {f"generated_{width}x{height}.png":
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
            for width, height in GENERATED_SHAPES}


def reference_images(model_path) -> dict[str, Image.Image]:
    """The model's validation examples (examples/<label>/<file> beside it, by that relative
    name), or the generated images when it has none."""
    examples = Path(model_path).parent / "examples"
    found = find_image_files(examples)
    if not found:
        return generated_images()
    images = {}
    for path in found:
        with Image.open(path) as image:
            images[path.relative_to(examples).as_posix()] = image.convert("RGB")
    return images


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities as the predictors compute them: softmax in float32, as torch does, then
    renormalised in float64."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True), dtype=np.float32)
    probs = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float64)
    return probs / probs.sum(axis=1, keepdims=True)


def measure(engine: Engine, graph: bytes | str, reference: Reference, threads: int) -> dict:
    """One engine's median ms per image (batch 1), top-1 agreement and largest probability gap
    against `reference`; {"error": ...} when it fails to load or run (logged)."""
    row = {"engine": engine.name, "precision": engine.precision}
    try:
        forward = engine.open(graph, threads)
        probs = np.concatenate([softmax(forward(x[None])[0]) for x in reference.inputs])
        one = reference.inputs[:1]
        forward(one)
        times, started = [], time.perf_counter()
        while len(times) < MAX_RUNS and (len(times) < MIN_RUNS
                                         or time.perf_counter() - started < TIMED_SECONDS):
            start = time.perf_counter()
            forward(one)
            times.append((time.perf_counter() - start) * 1000)
    except Exception as exc:  # an engine that cannot load this graph here is skipped, not fatal
        return {**row, "error": " ".join(f"{type(exc).__name__}: {exc}".split())[:200]}
    agreement = float(np.mean(probs.argmax(1) == reference.probabilities.argmax(1)))
    gap = float(np.abs(probs - reference.probabilities).max())
    return {**row, "ms": round(statistics.median(times), 3), "agreement": agreement, "gap": gap}


def measure_all(engines, graph: bytes | str, reference: Reference, threads: int) -> list[dict]:
    """`measure` for each engine; one that cannot run here is listed with why (skipped)."""
    rows = []
    for engine in engines:
        why = engine.unavailable(graph)
        if why:
            rows.append({"engine": engine.name, "precision": engine.precision, "skipped": why})
        else:
            rows.append(measure(engine, graph, reference, threads))
    return rows


def fails_budget(row: dict, budget: Budget) -> str | None:
    """Why a measured engine may not serve under `budget`, or None when it may."""
    if "ms" not in row:
        return row.get("error") or row.get("skipped") or "not measured"
    if row["precision"] not in budget.precisions:
        return f"{row['precision']} is outside the budget"
    if row["agreement"] < 1.0:
        return f"top-1 agreement {row['agreement']:.1%}"
    if not row["gap"] <= budget.gap:
        return f"probability gap {row['gap']:.2g} > {budget.gap:g}"
    return None


def pick(rows: list[dict], precision: str) -> tuple[str, str]:
    """(engine, why) for measured `rows` under INFERENCE_PRECISION=`precision`."""
    budget = BUDGETS[precision]
    qualified = [row for row in rows if fails_budget(row, budget) is None]
    if not qualified:
        return DEFAULT_ENGINE, (f"no engine measured within the budget ({budget.text}); "
                                f"{DEFAULT_ENGINE} serves, as checked at compile")
    best = min(qualified, key=lambda row: row["ms"])
    return best["engine"], (f"fastest of {len(qualified)} within the budget ({budget.text}): "
                            f"{best['ms']:.2f} ms/image at batch 1")


def measure_in_child(graph: bytes | str, reference: Reference, threads: int) -> list[dict]:
    """measure_all over every engine, in a fresh Python process; [] (logged) if it fails."""
    with tempfile.TemporaryDirectory(prefix="engine-choice-") as tmp:
        job = Path(tmp)
        if isinstance(graph, bytes):
            (job / "graph.onnx").write_bytes(graph)
            graph = str(job / "graph.onnx")
        np.savez(job / "reference.npz", inputs=reference.inputs, probabilities=reference.probabilities)
        (job / "job.json").write_text(json.dumps({"graph": str(graph), "threads": threads}))
        try:
            done = subprocess.run([sys.executable, "-m", "classifier.engine_choice", tmp],
                                  capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
            if done.returncode == 0:
                return json.loads((job / "results.json").read_text())
            reason = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            reason = [f"{type(exc).__name__}: {exc}"]
    log.warning("engines not measured (%s); %s serves", reason[0][:200], DEFAULT_ENGINE)
    return []


def main(argv=None) -> int:
    job = Path((argv or sys.argv[1:])[0])
    spec = json.loads((job / "job.json").read_text())
    saved = np.load(job / "reference.npz")
    reference = Reference(saved["inputs"], saved["probabilities"])
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    rows = measure_all(ENGINES.values(), spec["graph"], reference, int(spec["threads"]))
    (job / "results.json").write_text(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
