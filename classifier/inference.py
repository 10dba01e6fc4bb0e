"""Fast, batched inference from a loaded fastai image classifier. Knows nothing of Flask.

`learn.predict` builds a DataLoader and a progress bar per call. `Predictor`
instead keeps the learner's own validation transforms (so resizing, cropping
and normalisation are exactly what `learn.predict` does) and runs the model
itself, several images as one batch, under `torch.inference_mode`. With
onnxruntime installed the network runs there (about 2x faster than eager
PyTorch on a 2-core CPU), after a parity check against PyTorch at start-up.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

from classifier.images import DECODE_MARGIN, RGBLoader
from classifier.prediction import PredictorBase, concatenate_outputs, os_lock

if TYPE_CHECKING:
    from classifier.engine_choice import Reference

log = logging.getLogger(__name__)

# Largest logit difference we accept between onnxruntime and PyTorch before
# falling back to PyTorch; probabilities then agree far inside 1e-4.
ONNX_PARITY_TOLERANCE = 1e-3


def input_size(learner) -> tuple[int, int] | None:
    """The (height, width) the learner resizes to, read from its validation item transforms;
    None when it takes images as they come.

    fastai's Resize, RandomResizedCrop, CropPad and RandomCrop take (height, width)
    but store it as PIL's (width, height), so it is swapped back here.
    """
    for tfm in getattr(learner.dls.valid.after_item, "fs", []):
        size = getattr(tfm, "size", None)
        if size is not None and type(tfm).__name__ in ("Resize", "RandomResizedCrop", "CropPad",
                                                       "RandomCrop"):
            if isinstance(size, int):
                return (size, size)
            width, height = (int(s) for s in size)
            return (height, width)
    return None


def feature_split(model):
    """(body, head) with head(body(x)) == model(x) and body(x) the pooled features (fastai's
    vision models: the head's layers up to its Flatten); None for a model of another shape."""
    if not (isinstance(model, torch.nn.Sequential) and len(model) == 2
            and isinstance(model[1], torch.nn.Sequential)):
        return None
    head = model[1]
    for i, layer in enumerate(head):
        if type(layer).__name__ == "Flatten":
            return torch.nn.Sequential(model[0], *head[:i + 1]), head[i + 1:]
    return None


class WithFeatures(torch.nn.Module):
    """A model that answers (logits, pooled features): one pass, the features kept on the way."""

    def __init__(self, model):
        super().__init__()
        self.body, self.head = feature_split(model)

    def forward(self, x):
        features = self.body(x)
        return self.head(features), features


def with_features(model):
    """`model` as a WithFeatures, or None when its pooled features cannot be found."""
    return WithFeatures(model).eval() if feature_split(model) is not None else None


def loader_margin(learner) -> int:
    """The decode margin of the learner's own get_x: an RGBLoader's (our exports: fastai keeps
    it in the closure of the Transform it wraps it in), else DECODE_MARGIN (a notebook's)."""
    pipeline = getattr(getattr(learner.dls, "valid_ds", None), "tls", [None])[0]
    for tfm in getattr(getattr(pipeline, "tfms", None), "fs", [])[:1]:
        wrapped = getattr(getattr(tfm, "encodes", None), "_f", None)
        if wrapped is not None and getattr(wrapped, "__closure__", None):
            for loader in inspect.getclosurevars(wrapped).nonlocals.values():
                if isinstance(loader, RGBLoader):
                    return loader.margin
    return DECODE_MARGIN


class Predictor(PredictorBase):
    """Image -> Prediction, with the learner's own transforms and model.

    runtime: "auto" (onnxruntime when installed and in parity, else torch),
    "onnx" or "torch". Safe to share between threads; onnxruntime sessions are
    created lazily per process so a preloaded gunicorn master can fork it.
    """

    def __init__(self, learner, runtime: str = "auto", threads: int | None = None,
                 onnx_graph: bytes | str | None = None):
        """onnx_graph: this learner's network compiled at image build (classifier.onnx_compile),
        as bytes or an .onnx file's path; without it the graph is exported here (seconds)."""
        from fastai.vision.core import PILImage, TensorImage

        self._pil_type, self._tensor_type = PILImage, TensorImage
        self.vocab = [str(v) for v in learner.dls.vocab]
        self.model = learner.model.eval()
        self._with_features = with_features(self.model)  # the same weights, features kept
        valid = learner.dls.valid
        self._after_item = valid.after_item
        self._after_batch = valid.after_batch
        # A DataLoader sets split_idx on its pipelines each epoch; the exported
        # pipelines may carry None, which would apply training augmentation.
        self._after_item.split_idx = self._after_batch.split_idx = 1
        self.image_size = input_size(learner)
        self.decode_margin = loader_margin(learner)
        activation = getattr(learner.loss_func, "activation", None)
        self._activation = activation or (lambda x: torch.softmax(x, dim=-1))
        self.threads = threads
        self._lock = os_lock()
        # One forward pass at a time per process: the process's inference threads
        # (INFERENCE_THREADS) already use its share of the cores, so concurrent
        # passes would only fight over them. Batching concurrent requests into one
        # pass was measured and not adopted: onnxruntime takes as long per image
        # in a batch of 2-8 as alone on this CPU (docs/measurements.md).
        self._run_lock = os_lock()
        self._graph = None  # ONNX bytes or an .onnx path, once it serves
        self._sessions: dict[tuple[int, str], object] = {}
        self.runtime = "torch"
        if runtime not in ("auto", "onnx", "torch"):
            raise ValueError(f"runtime must be auto, onnx or torch, not {runtime!r}")
        self._check_transforms()
        if runtime != "torch" and self.image_size is not None:
            self._try_onnx(required=runtime == "onnx", graph=onnx_graph)

    # -- public API (predict, predict_batch, probabilities, warm_up: PredictorBase) --
    def prepare(self, image) -> torch.Tensor:
        """One PIL RGB image -> the learner's item transforms applied (model-sized, uint8).

        Lets a server free each full-size photo before decoding the next one of a batch.
        """
        return self._after_item(self._pil_type(image))

    @property
    def preparation(self) -> str:
        """What `prepare` does, as text: two predictors with equal ones take each other's items."""
        return repr(self._after_item)

    def model_input(self, items) -> torch.Tensor:
        """Outputs of `prepare` -> the normalised batch the network takes."""
        return self._collate(items)

    @property
    def torch_threads(self) -> int:
        """This process's thread count for torch ops: INFERENCE_THREADS when torch runs the
        network; 1 when onnxruntime does, leaving torch only the small preprocessing ops,
        whose idle OpenMP threads would spin on the cores onnxruntime needs next (measured:
        a 12 MP request 58 -> 56 ms, the network alone 16 -> 14 ms, on 2 quiet cores)."""
        return 1 if self.runtime == "onnx" else (self.threads or torch.get_num_threads())

    @contextlib.contextmanager
    def running_model(self):
        """Held while running self.model: one pass at a time (see __init__), with this
        thread's torch ops on INFERENCE_THREADS for that pass (Grad-CAM beside onnxruntime:
        1 thread 46 ms, 2 threads 25 ms)."""
        with self._run_lock:
            before = torch.get_num_threads()
            torch.set_num_threads(self.threads or before)
            try:
                yield self.model
            finally:
                torch.set_num_threads(before)

    def release_torch_model(self) -> None:
        """Serving with onnxruntime only: free the PyTorch weights (no Grad-CAM then)."""
        if self.runtime == "onnx":
            self.model = self._with_features = None

    # -- internals --------------------------------------------------------
    def _check_transforms(self) -> None:
        """Run the inference transforms once on a blank image, so one that cannot run
        (a notebook function this process lacks: MissingNotebookFunction) fails at load,
        not on the first request."""
        from PIL import Image

        self._collate([self.prepare(Image.new("RGB", (64, 64), (128, 128, 128)))])

    def _collate(self, items) -> torch.Tensor:
        batch = self._tensor_type(torch.stack(items))
        return torch.Tensor(self._after_batch(batch)).as_subclass(torch.Tensor)

    def _outputs(self, items) -> tuple[np.ndarray, np.ndarray | None]:
        if self.image_size is None and len(items) > 1:  # no resize: sizes differ, one by one
            return concatenate_outputs([self._outputs([item]) for item in items])
        logits, features = self._forward(self._collate(items))
        probs = self._activation(logits).double()
        return (probs / probs.sum(dim=1, keepdim=True)).numpy(), features

    def _forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, np.ndarray | None]:
        """(logits, pooled features or None) for a batch, on the compiled graph or torch."""
        if self.runtime == "onnx":
            forward = self._session()
            with self._run_lock:
                logits, features = forward(batch.numpy())
            return torch.from_numpy(logits), features
        with self.running_model() as model, torch.inference_mode():
            if self._with_features is None:
                return model(batch).float(), None
            logits, features = self._with_features(batch)
            return logits.float(), features.float().numpy()

    def _try_onnx(self, required: bool, graph: bytes | str | None = None) -> None:
        try:
            import onnxruntime  # noqa: F401

            from classifier.onnx_compile import export_graph

            self._graph = graph or export_graph(self.model, self.image_size)
            sample = torch.rand(2, 3, *self.image_size)
            onnx_logits = self._session()(sample.numpy())[0]
            with torch.inference_mode():
                torch_logits = self.model(sample).float().numpy()
            gap = float(np.abs(onnx_logits - torch_logits).max())
            if gap > ONNX_PARITY_TOLERANCE:
                raise RuntimeError(f"onnxruntime differs from PyTorch by {gap:.2e}")
            self.runtime = "onnx"
            # The loading process (a preloading gunicorn master) keeps no session:
            # workers make their own, and the master's would only hold memory.
            self._sessions.clear()
        except Exception as exc:
            self._graph = None
            self._sessions.clear()
            if required:
                raise
            log.info("onnxruntime not used (%s); serving with PyTorch", exc)

    def _session(self):
        from classifier.onnx_model import process_session

        return process_session(self._sessions, self._lock, self._graph,
                               self.threads or torch.get_num_threads(), self.engine)

    def reference(self, images: dict) -> Reference:
        """The PyTorch model's answers (learn.predict's, within 1e-4) on `images` (name -> PIL
        image), with the inputs the network takes: what other engines are scored against."""
        from classifier.engine_choice import Reference

        batch = self._collate([self.prepare(image) for image in images.values()])
        with torch.inference_mode():  # the loading process's own threads: it may fork later
            probs = self._activation(self.model(batch).float()).double()
        return Reference(batch.numpy(), (probs / probs.sum(dim=1, keepdim=True)).numpy())
