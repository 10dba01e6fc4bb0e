"""One way to load a model: export.pkl (or its compiled graph) -> a predictor and its card.

The server, the batch CLI (classifier/predict.py), training/evaluate.py and
classifier/onnx_compile.py all load through here, so each gets the same checks and the
same facts:

- with torch and fastai installed, export.pkl is unpickled by `load_learner_checked`
  (refused when its sha256 differs from export.json's) and served by `Predictor`, on
  onnxruntime when the graph compiled at image build is current (else one exported here)
  and matches PyTorch at load, else on PyTorch (the parity fallback, logged);
- without them (the lean image) the compiled graph alone serves (`load_compiled`), and
  runtime "torch" is refused;
- `load_checked_graph` serves the compiled graph without importing torch where it was
  checked against learn.predict when compiled: the default image's fast start.

export.json is read here and nowhere else: its facts reach callers as a `ModelCard`.
A notebook's bare export.pkl has none; its card then holds what the model itself tells
(classes, input size, architecture, file date) and None or {} for the rest.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from classifier.engine_cache import describe_choice, plan_engine
from classifier.engine_choice import reference_images
from classifier.model_files import ModelLoadError, load_learner_checked, read_metadata, sha256_file
from classifier.onnx_model import CompiledPredictor, load_compiled, read_checked, read_compiled
from classifier.prediction import PredictorBase

RUNTIMES = ("auto", "onnx", "torch")  # INFERENCE_RUNTIME's and the batch CLI's --runtime choices

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelCard:
    """What is known about a model, from export.json where training wrote one."""

    file: str  # the export's file name (export.pkl)
    vocab: tuple[str, ...]  # the classes, in the model's output order
    arch: str
    image_size: tuple[int, int] | None  # (height, width) the model takes; None: as uploaded
    sha256: str  # of export.pkl
    created_at: str  # ISO 8601; a notebook export's file date
    has_export_json: bool  # False: a notebook export, so the fields below are empty
    metrics: dict  # {"validation": {...}, "test": {...}} as training/evaluate.py computes them
    threshold: float | None  # the "not sure" confidence threshold training chose
    threshold_method: str | None
    train_images: int | None
    field_reference: dict | None = None  # what the drift score compares with (classifier/drift.py)

    @property
    def recall(self) -> dict[str, float]:
        """Validation recall per class; {} when unknown."""
        per_class = self.metrics.get("validation", {}).get("per_class", {})
        return {label: row["recall"] for label, row in per_class.items()}


def make_card(path, exported: dict | None, vocab, image_size, *, arch: str,
              sha256: str | None = None, created_at: str | None = None) -> ModelCard:
    """The card of the model at `path`: export.json's facts (`exported`), else the model's own
    (`vocab`, `image_size`, `arch`, and `sha256` / `created_at` from the file when not given)."""
    known = exported or {}
    unsure = known.get("unsure") or {}
    threshold = unsure.get("threshold")
    size = known.get("image_size") or image_size
    if isinstance(size, int):
        size = (size, size)
    created = known.get("created_at") or created_at or dt.datetime.fromtimestamp(
        os.path.getmtime(path), dt.UTC).isoformat(timespec="seconds")
    train_images = ((known.get("dataset") or {}).get("images") or {}).get("train")
    return ModelCard(
        file=Path(path).name, vocab=tuple(str(v) for v in vocab),
        arch=str(known.get("arch") or arch),
        image_size=tuple(int(s) for s in size) if size else None,
        sha256=known.get("sha256") or sha256 or sha256_file(path),
        created_at=str(created), has_export_json=exported is not None,
        metrics=known.get("metrics") or {},
        threshold=float(threshold) if isinstance(threshold, (int, float)) else None,
        threshold_method=unsure.get("method") if threshold is not None else None,
        train_images=train_images if isinstance(train_images, int) else None,
        field_reference=known.get("field_reference") or None)


def learner_arch(learner) -> str:
    """The architecture's name, as far as the learner tells it."""
    return getattr(getattr(learner, "arch", None), "__name__", None) or type(learner.model).__name__


def load_learner_card(path):
    """(fastai Learner, ModelCard) for an export.pkl, or ModelLoadError saying why not."""
    from classifier.inference import input_size

    learner, exported = load_learner_checked(path)
    card = make_card(path, exported, learner.dls.vocab, input_size(learner), arch=learner_arch(learner))
    return learner, card


def torch_installed() -> bool:
    """Whether torch and fastai import here (not in the lean image)."""
    try:
        import fastai.learner  # noqa: F401 - imports torch too
    except ImportError:
        return False
    return True


def load_model(path, runtime: str = "auto", threads: int | None = None,
               keep_torch_model: bool = True, option: str = "runtime",
               precision: str | None = None, measure_later: bool = False):
    """(predictor, ModelCard) for the export at `path`; ModelLoadError (one line) when it
    cannot be served.

    runtime: "auto" (onnxruntime when it matches PyTorch, else PyTorch), "onnx" or "torch".
    keep_torch_model=False frees the PyTorch weights when onnxruntime serves (no Grad-CAM
    then). `option` names the setting that chose `runtime`, for the messages. `precision`
    ("auto" or "exact", INFERENCE_PRECISION) lets the compiled graph run on the fastest
    engine within that budget (classifier/engine_choice.py); None keeps onnxruntime f32.
    `measure_later`: on a cache miss serve onnxruntime f32 and leave the measurement to the
    caller (see choose_engine_for).
    """
    if not torch_installed():
        predictor, card = _load_compiled(path, runtime, threads, option)
        return choose_engine_for(predictor, path, precision, runtime, measure_later), card
    from classifier.inference import Predictor

    learner, card = load_learner_card(path)
    compiled = read_compiled(path) if runtime != "torch" else None  # made at image build
    try:
        predictor = Predictor(learner, runtime=runtime, threads=threads,
                              onnx_graph=compiled[0] if compiled else None)
    except ModelLoadError:  # says why itself (a notebook function the model calls)
        raise
    except Exception as exc:  # e.g. runtime="onnx" demanded but the export fails parity
        raise ModelLoadError(f"{path} cannot run with {option}={runtime}: "
                             f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if compiled and predictor.runtime == "onnx":
        log.info("using the ONNX graph compiled at image build (%s)", compiled[1]["pkl_sha256"][:12])
    choose_engine_for(predictor, path, precision, runtime, measure_later)
    if not keep_torch_model:
        predictor.release_torch_model()
    return predictor, card


def choose_engine_for(predictor: PredictorBase, path, precision: str | None, runtime: str,
                      measure_later: bool = False):
    """Let the fastest engine within `precision`'s budget run the predictor's compiled graph
    (runtime "auto" only: "onnx" asks for onnxruntime itself); logs what it chose and why.
    With `measure_later`, a cache miss leaves onnxruntime f32 serving and the measurement in
    predictor.engine_measurement, for the server to run after it serves (app/engine_switch.py)."""
    if precision is None or runtime != "auto" or predictor.graph is None:
        return predictor
    choice, measurement = plan_engine(predictor.graph,
                                      lambda: predictor.reference(reference_images(path)),
                                      predictor.threads or 1, precision, path)
    if measurement is not None and not measure_later:
        choice, measurement = measurement.run(), None
    predictor.use_engine(choice)
    predictor.engine_measurement = measurement
    log.info("%s", describe_choice(choice))
    return predictor


def _load_compiled(path, runtime: str, threads: int | None, option: str):
    """The lean image: the graph and preprocessing compiled at image build, no torch."""
    if runtime == "torch":
        raise ModelLoadError(f"{option}=torch, but torch and fastai are not installed here "
                             f"(the lean image); use {option}=auto or onnx.")
    return _with_card(path, load_compiled(path, threads))


def load_checked_graph(path, threads: int | None = None, runtime: str = "auto",
                       precision: str | None = None, measure_later: bool = False):
    """(predictor, ModelCard) from the graph compiled for this export.pkl and checked against
    learn.predict when it was compiled (classifier.onnx_model.read_checked), without importing
    torch or fastai, on the engine `precision` chooses (and `measure_later`, as load_model);
    None where there is no such graph (absent, stale or unchecked).

    The default image starts on this and loads PyTorch afterwards, only for what needs it.
    """
    compiled = read_checked(path)
    if compiled is None:
        return None
    predictor, card = _with_card(path, CompiledPredictor(*compiled, threads=threads,
                                                         runtime="onnx"))
    return choose_engine_for(predictor, path, precision, runtime, measure_later), card


def _with_card(path, predictor: CompiledPredictor):
    meta = predictor.meta
    card = make_card(path, read_metadata(path), predictor.vocab, predictor.image_size,
                     arch=meta["arch"], sha256=meta["pkl_sha256"], created_at=meta["created_at"])
    return predictor, card
