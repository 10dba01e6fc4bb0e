"""A compiled model: an ONNX graph plus the learner's own preprocessing, served without torch.

`python -m classifier.onnx_compile models/export.pkl` (at image build, where torch and
fastai are installed) writes beside the .pkl:

- `export.onnx`: the network, logits out (and the pooled features, classifier/drift.py's
  embedding, as a second output where the model has them), any batch size;
- `export.onnx.json`: the .pkl's sha256, the vocab, the validation-time preprocessing
  (fastai's Resize or RandomResizedCrop as the learner holds it, the 0-255 scaling and
  the normalisation statistics) and what GET /model reports.

This module needs only numpy, Pillow and onnxruntime. `CompiledPredictor` answers like
`classifier.inference.Predictor` (same methods, same Prediction), which is what lets the
lean image drop torch and fastai (about 5 GB with CUDA wheels, 1 GB with CPU ones).
The graph is also reused by the torch image while the .pkl's sha256 still matches,
which saves exporting it at every start.
"""
from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from classifier.engine_choice import Reference, softmax
from classifier.engines import DEFAULT_ENGINE, ENGINES, Forward
from classifier.images import DECODE_MARGIN
from classifier.model_files import ModelLoadError, sha256_file
from classifier.prediction import PredictorBase, concatenate_outputs, os_lock

FORMAT = 1  # bumped when the sidecar's meaning changes; older sidecars are then recompiled
TOLERANCE = 1e-4  # largest probability difference from learn.predict a compiled graph may have


def graph_path(model_path) -> Path:
    return Path(model_path).with_suffix(".onnx")


def sidecar_path(model_path) -> Path:
    return Path(model_path).with_suffix(".onnx.json")


def read_compiled(model_path) -> tuple[str, dict] | None:
    """(graph file, sidecar) compiled from this .pkl, or None when absent or stale.

    Stale means the .pkl's sha256 differs from the one recorded at compile time (a
    retrained or replaced model). With no .pkl beside it (the lean image) the sidecar
    is trusted: it was checked against the .pkl when compiled.
    """
    graph, sidecar = graph_path(model_path), sidecar_path(model_path)
    if not (graph.is_file() and sidecar.is_file()):
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("format") != FORMAT:
        return None
    if Path(model_path).is_file() and sha256_file(model_path) != meta.get("pkl_sha256"):
        return None
    return str(graph), meta


def read_checked(model_path) -> tuple[str, dict] | None:
    """read_compiled's answer where its sidecar also records the check against learn.predict
    (`checked_gap` within TOLERANCE, written only when it passed), else None. Such a graph
    may serve in place of the .pkl with no check at load (the default image's start)."""
    compiled = read_compiled(model_path)
    gap = compiled[1].get("checked_gap") if compiled else None
    if isinstance(gap, (int, float)) and 0 <= gap <= TOLERANCE:
        return compiled
    return None


# -- preprocessing: fastai's validation-time item transforms, in PIL and numpy ----------
_NP_PAD = {"zeros": "constant", "border": "edge", "reflection": "reflect"}


def crop_pad(image: Image.Image, size, top_left, pad_mode="zeros", resample=Image.BILINEAR,
             resize_to=None) -> Image.Image:
    """fastai's `crop_pad` for PIL images: crop where inside, pad where outside, then resize.

    Sizes and coordinates are PIL's (width, height) / (x, y), as fastai stores them.
    """
    orig = image.size
    sz, tl = tuple(size), tuple(top_left)
    end = (tl[0] + sz[0], tl[1] + sz[1])
    if any(t >= 0 for t in tl) or any(e <= o for e, o in zip(end, orig)):
        image = image.crop((max(tl[0], 0), max(tl[1], 0), min(end[0], orig[0]), min(end[1], orig[1])))
    if any(t < 0 for t in tl) or any(e >= o for e, o in zip(end, orig)):
        before = [max(-t, 0) for t in tl]
        after = [max(s - o + t, 0) for s, o, t in zip(sz, orig, tl)]
        if any(before) or any(after):
            pixels = np.asarray(image)
            widths = ((before[1], after[1]), (before[0], after[0]), (0, 0))
            image = Image.fromarray(np.pad(pixels, widths, mode=_NP_PAD[pad_mode]))
    if resize_to is not None:
        image = image.resize(tuple(resize_to), resample)
    return image


def resize(image: Image.Image, step: dict) -> Image.Image:
    """fastai's `Resize` in validation: squish, or a centred crop or pad, to `size`."""
    w, h = image.size
    size = step["size"]  # (width, height)
    if step["method"] == "squish":
        return crop_pad(image, (w, h), (0, 0), step["pad_mode"], step["resample"], size)
    ratio_w, ratio_h = w / size[0], h / size[1]
    pad = step["method"] == "pad"
    m = ratio_w if ((ratio_w > ratio_h) if pad else (ratio_w < ratio_h)) else ratio_h
    crop = (int(m * size[0]), int(m * size[1]))
    top_left = (int(0.5 * (w - crop[0])), int(0.5 * (h - crop[1])))
    return crop_pad(image, crop, top_left, step["pad_mode"], step["resample"], size)


def random_resized_crop(image: Image.Image, step: dict) -> Image.Image:
    """fastai's `RandomResizedCrop` in validation: resize a little larger, crop the centre."""
    size = tuple(step["size"])
    extra = math.ceil(max(size) * step["val_xtra"] / 8) * 8
    final = (size[0] + extra, size[1] + extra)
    image = crop_pad(image, image.size, (0, 0), "zeros", step["resample"], final)
    if final != size:
        top_left = ((final[0] - size[0]) // 2, (final[1] - size[1]) // 2)
        image = crop_pad(image, size, top_left)
    return image


STEPS = {"resize": resize, "random_resized_crop": random_resized_crop}


class CompiledPredictor(PredictorBase):
    """Image -> Prediction from a compiled model, with onnxruntime and no torch.

    Same interface as classifier.inference.Predictor. The session is made lazily per
    process, so a preloading gunicorn master can fork it.
    """

    def __init__(self, graph: bytes | str, meta: dict, threads: int | None = None,
                 runtime: str = "onnx-lean"):
        """graph: the ONNX bytes, or the path of an .onnx file; with a path the serving
        processes read it only when each makes its session, and the master holds none.
        runtime: what /model calls it: "onnx-lean" without torch (the lean image), "onnx"
        where torch is installed but not loaded yet (the default image's start)."""
        self.runtime = runtime
        self.meta = meta
        self.vocab = [str(v) for v in meta["vocab"]]
        self.image_size = tuple(meta["image_size"]) if meta.get("image_size") else None
        self.decode_margin = int(meta.get("decode_margin", DECODE_MARGIN))  # older sidecars: 2
        self.threads = threads
        pre = meta["preprocessing"]
        self._steps = pre["steps"]
        self._scale = np.float32(pre["scale"])
        stats = pre.get("mean"), pre.get("std")
        self._mean, self._std = (None, None) if None in stats else (
            np.asarray(stats[0], np.float32).reshape(1, -1, 1, 1),
            np.asarray(stats[1], np.float32).reshape(1, -1, 1, 1))
        self._graph = graph
        self._sessions: dict[tuple[int, str], object] = {}
        self._lock = os_lock()
        self._run_lock = os_lock()  # one forward pass at a time, as in Predictor

    def prepare(self, image: Image.Image) -> np.ndarray:
        """One PIL RGB image -> the model-sized (height, width, 3) uint8 array."""
        for step in self._steps:
            image = STEPS[step["op"]](image, step)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)

    def model_input(self, items) -> np.ndarray:
        """Outputs of `prepare` (one shape) -> the normalised float32 batch the network takes."""
        batch = np.stack(items).transpose(0, 3, 1, 2).astype(np.float32) / self._scale
        if self._mean is not None:
            batch = (batch - self._mean) / self._std
        return batch

    def reference(self, images: dict) -> Reference | None:
        """The sidecar's learn.predict answers on `images` (name -> PIL image; see
        classifier.engine_choice), with the inputs the network takes; None when it has none."""
        answers = {row["image"]: row["probabilities"] for row in self.meta.get("reference") or []}
        names = [name for name in images if name in answers]
        if not names:
            return None
        return Reference(self.model_input([self.prepare(images[name]) for name in names]),
                         np.asarray([answers[name] for name in names], dtype=np.float64))

    @property
    def preparation(self) -> str:
        """What `prepare` does, as text: two predictors with equal ones take each other's items."""
        return json.dumps(self._steps, sort_keys=True)

    def _outputs(self, items) -> tuple[np.ndarray, np.ndarray | None]:
        if not items:
            return np.zeros((0, len(self.vocab))), None
        shapes = {item.shape for item in items}
        if len(shapes) > 1:  # no fixed size in the pipeline: run one by one
            return concatenate_outputs([self._outputs([item]) for item in items])
        batch = self.model_input(items)
        forward = self._session()
        with self._run_lock:
            logits, features = forward(batch)
        return softmax(logits), features

    def _session(self):
        return process_session(self._sessions, self._lock, self._graph, self.threads or 1,
                               self.engine)


def process_session(sessions: dict, lock: threading.Lock, graph: bytes | str, threads: int,
                    engine: str = DEFAULT_ENGINE) -> Forward:
    """This process's `forward(batch) -> (logits, features)` on `engine` in `sessions` ((pid, engine) ->
    forward), made on first use: a caller that read the engine before a switch never leaves
    its old one in place for the next.

    A preloading gunicorn master forks the predictor: each worker makes its own session
    and drops the parent's.
    """
    key = (os.getpid(), engine)
    session = sessions.get(key)
    if session is None:
        with lock:
            session = sessions.get(key)
            if session is None:
                session = ENGINES[engine].open(graph, threads)
                sessions.clear()
                sessions[key] = session
    return session


def make_session(graph: bytes | str, threads: int):
    """An onnxruntime CPU session (from ONNX bytes or an .onnx file's path) with `threads` intra-op threads that do not spin when idle.

    Spinning idle pool threads took CPU from the other workers: measured 117 -> 88 ms per
    224 px image at 2 threads on a busy 2-core machine.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def load_compiled(model_path, threads: int | None = None) -> CompiledPredictor:
    """The compiled model for `model_path`, or ModelLoadError saying how to make one."""
    compiled = read_compiled(model_path)
    if compiled is None:
        raise ModelLoadError(
            f"No compiled model for {model_path} ({graph_path(model_path).name} and "
            f"{sidecar_path(model_path).name} missing or stale), and torch is not installed "
            f"here to load it: compile it where torch is (python -m classifier.onnx_compile "
            f"{model_path}), as the Dockerfile's lean target does.")
    return CompiledPredictor(*compiled, threads=threads)
