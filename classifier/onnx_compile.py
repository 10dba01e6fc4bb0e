"""Compile export.pkl into an ONNX graph plus its preprocessing, checked against learn.predict.

    python -m classifier.onnx_compile models/export.pkl

Writes models/export.onnx and models/export.onnx.json (see classifier/onnx_model.py), and
models/export.int8.onnx where the model has examples (classifier/int8.py), and exits 0, or
exits 1 with one line saying why not: a transform the torch-free predictor cannot reproduce,
or probabilities that differ from `learn.predict` by more than TOLERANCE on the model's
example images (models/examples/, as training writes them) and on generated images of odd
shapes that exercise cropping and padding. Needs torch and fastai: the Dockerfile runs it at
image build.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from classifier.engine_choice import generated_images, reference_images
from classifier.image_files import find_image_files
from classifier.loader import load_learner_card
from classifier.model_files import ModelLoadError, atomic_path, write_json_atomic
from classifier.onnx_model import (
    FORMAT,
    TOLERANCE,
    CompiledPredictor,
    graph_path,
    sidecar_path,
)


class CompileError(RuntimeError):
    """The model cannot be compiled for the torch-free predictor; one line saying why."""


def export_graph(model, image_size) -> bytes:
    """The network as ONNX bytes: input (batch, 3, height, width) float32 -> logits, and the
    pooled features (classifier.drift's embedding) as a second output where the model has
    them (classifier.inference.with_features)."""
    import torch

    from classifier.inference import with_features

    height, width = image_size
    sample = torch.rand(2, 3, height, width)
    split = with_features(model)
    outputs = ["logits"] if split is None else ["logits", "features"]
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(split if split is not None else model.eval(), (sample,), buf,
                          dynamo=False, opset_version=17, input_names=["input"],
                          output_names=outputs,
                          dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in outputs}})
    return buf.getvalue()


def _resample(tfm) -> int:
    return int(getattr(tfm, "mode", Image.BILINEAR))


def preprocessing(learner) -> dict:
    """The learner's validation-time transforms as data, or CompileError for one we lack."""
    from fastai.data.transforms import IntToFloatTensor, Normalize, ToTensor
    from fastai.vision.augment import RandomResizedCrop, Resize

    steps = []
    for tfm in learner.dls.valid.after_item.fs:
        if getattr(tfm, "split_idx", None) == 0 or isinstance(tfm, ToTensor):
            continue  # training-only augmentation, or the PIL -> tensor step done in numpy
        size = [int(s) for s in tfm.size] if hasattr(tfm, "size") else None
        if isinstance(tfm, Resize):
            steps.append({"op": "resize", "size": size, "method": str(tfm.method),
                          "pad_mode": str(tfm.pad_mode), "resample": _resample(tfm)})
        elif isinstance(tfm, RandomResizedCrop):
            steps.append({"op": "random_resized_crop", "size": size,
                          "val_xtra": float(tfm.val_xtra), "resample": _resample(tfm)})
        else:
            raise CompileError(f"item transform {type(tfm).__name__} is not supported by the "
                               "torch-free predictor; serve this model with the default image")
    scale, mean, std = 1.0, None, None
    for tfm in learner.dls.valid.after_batch.fs:
        if getattr(tfm, "split_idx", None) == 0:
            continue
        if isinstance(tfm, IntToFloatTensor):
            scale = float(tfm.div)
        elif isinstance(tfm, Normalize) and tfm.mean is not None:
            mean = [float(v) for v in np.asarray(tfm.mean.cpu()).reshape(-1)]
            std = [float(v) for v in np.asarray(tfm.std.cpu()).reshape(-1)]
        else:
            raise CompileError(f"batch transform {type(tfm).__name__} is not supported by the "
                               "torch-free predictor; serve this model with the default image")
    return {"steps": steps, "scale": scale, "mean": mean, "std": std}


def check_images(model_path: Path, workdir: Path) -> list[Path]:
    """The model's example images, and generated ones of shapes that need cropping or padding."""
    found = find_image_files(model_path.parent / "examples")
    for name, image in generated_images().items():
        image.save(workdir / name)
        found.append(workdir / name)
    return found


def largest_difference(learner, predictor: CompiledPredictor, images: list[Path]) -> tuple[float, dict]:
    """Largest |p_compiled - p_learn.predict| over the images and classes, and learn.predict's
    probabilities for each image (by file name relative to examples/, or the generated name).

    Both sides get the pixels the learner's own loader decodes (ours shrinks large images
    before the resize; a notebook's does not), so this measures the graph and the
    preprocessing alone: decoding full-size here made a 300x200 noise image differ by 4e-2.
    """
    gap, answers = 0.0, {}
    for path in images:
        decoded = learner.dls.test_dl([path]).dataset.tfms(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with learner.no_bar():
                expected = learner.predict(path)[2].double().numpy()
        got = predictor.probabilities([decoded.convert("RGB")])[0]
        gap = max(gap, float(np.abs(got - expected).max()))
        name = path.parent.name + "/" + path.name if path.parent.parent.name == "examples" else path.name
        answers[name] = [float(p) for p in expected]
    return gap, answers


def compile_model(model_path) -> float:
    """Write export.onnx and export.onnx.json for `model_path`; returns the checked gap."""
    from classifier.inference import loader_margin

    model_path = Path(model_path)
    learner, card = load_learner_card(model_path)
    pre = preprocessing(learner)
    sizes = [step["size"] for step in pre["steps"]]
    if not sizes:
        raise CompileError("the learner has no Resize item transform, so its input size is "
                           "unknown; serve this model with the default image")
    image_size = [sizes[-1][1], sizes[-1][0]]  # (height, width)
    graph = export_graph(learner.model, image_size)
    sidecar = {
        "format": FORMAT,
        "pkl_sha256": card.sha256,  # checked against the file by the loader
        "vocab": list(card.vocab),
        "image_size": image_size,
        "decode_margin": loader_margin(learner),
        "arch": card.arch,
        "created_at": card.created_at,
        "preprocessing": pre,
    }
    predictor = CompiledPredictor(graph, sidecar, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        gap, answers = largest_difference(learner, predictor, check_images(model_path, Path(tmp)))
    if not gap <= TOLERANCE:
        raise CompileError(f"the compiled model differs from learn.predict by {gap:.2e} "
                           f"(more than {TOLERANCE:g})")
    with atomic_path(graph_path(model_path)) as tmp:
        tmp.write_bytes(graph)
    int8 = write_int8_copy(graph, predictor, model_path)
    # learn.predict's answers on the images the serving engines are scored on (engine_choice)
    reference = [{"image": name, "probabilities": answers[name]}
                 for name in reference_images(model_path) if name in answers]
    write_json_atomic(sidecar_path(model_path), dict(sidecar, checked_gap=gap, reference=reference,
                                                     int8_sha256=int8))
    return gap


def write_int8_copy(graph: bytes, predictor: CompiledPredictor, model_path: Path) -> str | None:
    """export.int8.onnx beside the graph (classifier/int8.py), calibrated on the model's
    examples mirrored; its sha256, or None (and no file) for a model without examples."""
    from classifier.int8 import int8_path, quantize

    target = int8_path(graph_path(model_path))
    examples = find_image_files(model_path.parent / "examples")
    if not examples:
        target.unlink(missing_ok=True)
        return None
    mirrored = []
    for path in examples:
        with Image.open(path) as image:
            mirrored.append(predictor.prepare(ImageOps.mirror(image.convert("RGB"))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = quantize(graph, predictor.model_input(mirrored))
    with atomic_path(target) as tmp:
        tmp.write_bytes(int8)
    return hashlib.sha256(int8).hexdigest()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the fastai export, e.g. models/export.pkl")
    args = parser.parse_args(argv)
    try:
        gap = compile_model(args.model)
    except (CompileError, ModelLoadError) as exc:
        print(f"error: cannot compile {args.model}: {exc}", file=sys.stderr)
        return 1
    print(f"compiled {args.model} -> {graph_path(args.model).name}, "
          f"{sidecar_path(args.model).name} (largest difference from learn.predict {gap:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
