"""Grad-CAM: which parts of the photo pushed the model towards a class. Knows nothing of Flask.

Grad-CAM (Selvaraju et al., 2017) as fastai's book builds it with fastai's own hooks
(`hook_output`, chapter 18): the gradient of the class score with respect to the last
convolutional feature map, averaged per channel, weights that map; its positive
part, stretched over the input, is the heatmap. It needs the PyTorch model (a
backward pass), also when onnxruntime serves the predictions.
"""
from __future__ import annotations

import base64
import io

import numpy as np
import torch

METHOD = "grad-cam"
HEAT_OPACITY = 0.5  # the heatmap's share of each pixel over the photo


class ExplanationUnavailable(RuntimeError):
    """This predictor cannot explain (no PyTorch model, or no convolutional body)."""


def feature_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The convolutional body of a fastai vision_learner model (Sequential(body, head))."""
    if isinstance(model, torch.nn.Sequential) and len(model) >= 2:
        return model[0]
    raise ExplanationUnavailable(f"Grad-CAM needs a fastai vision_learner model (body, head); "
                                 f"this one is a {type(model).__name__}.")


def grad_cam(predictor, item, index: int) -> np.ndarray:
    """(height, width) heat in [0, 1] over `item` (an output of Predictor.prepare) for class `index`."""
    from fastai.callback.hook import hook_output

    if predictor.model is None:
        raise ExplanationUnavailable("No PyTorch model is loaded in this server "
                                     "(EXPLANATIONS=off), so it cannot explain predictions.")
    layer = feature_layer(predictor.model)
    batch = predictor.model_input([item]).clone().requires_grad_(True)
    with predictor.running_model() as model, torch.inference_mode(False), torch.enable_grad():
        with hook_output(layer, detach=False) as features:
            score = model(batch)[0, index]
            (gradient,) = torch.autograd.grad(score, features.stored)
        maps = features.stored[0].detach()
    if maps.dim() != 3:
        raise ExplanationUnavailable("Grad-CAM needs a convolutional feature map; "
                                     f"this model's body gives shape {tuple(maps.shape)}.")
    weights = gradient[0].mean(dim=(1, 2), keepdim=True)
    cam = (weights * maps).sum(dim=0).clamp(min=0)
    height, width = item.shape[-2:]
    cam = torch.nn.functional.interpolate(cam[None, None], size=(height, width),
                                          mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).numpy()


def heatmap_data_url(item, heat: np.ndarray) -> str:
    """The photo as the model saw it (`item`), with `heat` laid over it, as an inline PNG."""
    from matplotlib import colormaps
    from PIL import Image

    photo = np.asarray(item.permute(1, 2, 0), dtype=np.float32)
    colours = colormaps["jet"](heat)[..., :3] * 255
    blended = (1 - HEAT_OPACITY) * photo + HEAT_OPACITY * colours
    buf = io.BytesIO()
    Image.fromarray(blended.clip(0, 255).astype(np.uint8)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def explain(predictor, item, index: int) -> dict:
    """The explanation /predict returns: {"method", "label", "image"}.

    `item`: an output of `predictor.prepare`, or of a CompiledPredictor's (the same pixels, as
    a (height, width, 3) uint8 array) where that graph serves and `predictor` only explains.
    """
    if isinstance(item, np.ndarray):
        item = torch.from_numpy(np.ascontiguousarray(item)).permute(2, 0, 1)
    return {"method": METHOD, "label": predictor.vocab[index],
            "image": heatmap_data_url(item, grad_cam(predictor, item, index))}


def load_explainer(path, threads: int | None):
    """The PyTorch Predictor of the export.pkl at `path`, for Grad-CAM beside its compiled
    graph (app/explainer.py); ModelLoadError says why not."""
    from classifier.inference import Predictor
    from classifier.loader import load_learner_card

    torch.set_num_threads(1)  # small preprocessing ops; running_model raises it per Grad-CAM
    learner, _ = load_learner_card(path)
    return Predictor(learner, runtime="torch", threads=threads)
