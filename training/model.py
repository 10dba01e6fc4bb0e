"""The network: an architecture name -> a fastai vision_learner, with ImageNet weights from
torch's cache, the network, or a local torchvision state dict (--weights, for offline machines)."""
from __future__ import annotations

from pathlib import Path

from training import UsageError
from training.batchnorm import precise_batchnorm
from training.precision import CHANNELS_LAST_MIN_SIZE, bf16_autocast, channels_last


def resolve_arch(name: str, pretrained: bool, weights: str | None):
    """A torchvision or fastai model function for `name`, else the timm name itself."""
    import torchvision.models as tvm
    from fastai.vision.models import xresnet

    if name in tvm.list_models(module=tvm):
        return getattr(tvm, name)
    if name.startswith("x") and callable(getattr(xresnet, name, None)):
        if pretrained or weights:
            raise UsageError(f"fastai's {name} has no ImageNet weights; use --no-pretrained.")
        return getattr(xresnet, name)
    try:
        import timm
    except ImportError:
        timm = None
    if timm is not None and name in timm.list_models():
        if weights:
            raise UsageError("--weights takes a torchvision state dict; use a torchvision --arch.")
        return name
    hint = "" if timm else " (install timm for its model names)"
    raise UsageError(f"Unknown --arch {name!r}: use a torchvision/fastai name such as resnet18, "
                     f"resnet34, resnet50, efficientnet_b0, mobilenet_v3_large, convnext_tiny{hint}.")


def load_body_weights(learn, arch, file: Path) -> None:
    """Copy a torchvision state dict's body into the learner (its ImageNet head is not used)."""
    import torch
    from fastai.vision.learner import create_body, model_meta

    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"--weights {file} is not a PyTorch state dict ({type(exc).__name__}).") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UsageError(f"--weights {file} holds a {type(state).__name__}, not a state dict.")
    model = arch(weights=None)
    wanted = model.state_dict()
    usable = {k: v for k, v in state.items() if k in wanted and wanted[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    # Where fastai cuts the body off the torchvision model (None: at the last pooling layer).
    body = create_body(model, 3, True, model_meta.get(arch, {}).get("cut"))
    body_tensors = {id(t) for t in body.state_dict(keep_vars=True).values()}
    missing = [k for k, t in model.state_dict(keep_vars=True).items()
               if id(t) in body_tensors and k not in usable]
    unknown = [k for k in state if k not in wanted]
    if missing or unknown:
        example = (missing or unknown)[0]
        raise UsageError(f"--weights {file} does not fit --arch {arch.__name__}: {len(missing)} "
                         f"tensors missing or of another shape, {len(unknown)} unknown "
                         f"(e.g. {example}).")
    learn.model[0].load_state_dict(body.state_dict())


def build_learner(dls, config, arch, workdir: Path):
    """fastai's vision_learner for a TrainConfig; `workdir` takes lr_find's scratch files.
    Its BatchNorm statistics are measured on the training images before each validation
    (training/batchnorm.py); with config.precision "bf16" it fits (and finds its rate) in bf16
    autocast; from CHANNELS_LAST_MIN_SIZE up in channels-last layout. export.portable takes
    these callbacks off again."""
    from fastai.metrics import accuracy
    from fastai.vision.augment import Normalize
    from fastai.vision.core import imagenet_stats
    from fastai.vision.learner import vision_learner

    download = config.pretrained and config.weights is None
    if config.weights is not None and not isinstance(arch, str):
        dls.add_tfms([Normalize.from_stats(*imagenet_stats)], "after_batch")
    try:
        learn = vision_learner(dls, arch, pretrained=download, metrics=accuracy, path=workdir)
    except (OSError, RuntimeError) as exc:
        if not download:
            raise
        raise UsageError(f"Could not get the ImageNet weights for {config.arch} "
                         f"({type(exc).__name__}: {str(exc)[:120]}). Offline, train from scratch "
                         "with --no-pretrained, or fine-tune a local torchvision state dict with "
                         "--weights FILE.") from None
    if config.weights is not None:
        load_body_weights(learn, arch, Path(config.weights))
        learn.pretrained = True
        learn.freeze()
    learn.add_cb(precise_batchnorm(autocast_bf16=config.precision == "bf16"))
    if config.precision == "bf16":
        learn.add_cb(bf16_autocast())
    if config.size >= CHANNELS_LAST_MIN_SIZE:
        learn.add_cb(channels_last())
    return learn
