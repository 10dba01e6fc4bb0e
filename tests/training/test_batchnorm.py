"""The statistics an exported model normalises with describe its trained weights.

Trained from scratch on a few phone photos (a few optimizer steps an epoch), BatchNorm's
running averages lagged the weights so far that in eval mode the model answered one class
for every photo: 47.5 % validation accuracy where the same weights scored 100 % with
statistics measured on the training images (docs/training.md). training/batchnorm.py measures
them again before each validation; without it this test fails."""
from __future__ import annotations

import copy

import fastai.callback.progress  # noqa: F401  (adds Learner.no_bar)
import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)
import torch
from fastai.torch_core import set_seed

from harness.bench_assets import EASY_COLOURS, write_labelled_photos
from training import batchnorm, data
from training.model import build_learner, resolve_arch
from training.train import TrainConfig, resolve


def measured_statistics(model, loader):
    """A copy of `model` whose BatchNorm statistics are those of all of `loader`'s images (one
    batch: the population's mean and variance)."""
    fresh = copy.deepcopy(model)
    for layer in fresh.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.reset_running_stats()
            layer.momentum = None
    fresh.train()
    with torch.no_grad():
        for xb, _ in loader:
            fresh(xb)
    return fresh.eval()


def probabilities(model, loader):
    model.eval()
    with torch.no_grad():
        return torch.cat([model(xb).float().softmax(1) for xb, _ in loader])


def test_a_model_trained_from_scratch_on_few_photos_predicts_with_its_own_statistics(tmp_path):
    root = write_labelled_photos(tmp_path / "photos", 40, size=(400, 300),
                                 colours=EASY_COLOURS)  # learnable in 2 epochs
    train, valid = data.random_split(sorted(root.rglob("*.jpg")), 0.25, 42)
    ds = data.Dataset(root=root, layout="folders", vocab=["box", "disc"], train=train, valid=valid)
    config = resolve(TrainConfig(data_dir=str(root), pretrained=False, augment=False, size=64,
                                 bs=8, lr=1e-3, epochs=2, precision="fp32"))
    set_seed(42)
    dls = data.dataloaders(ds, config.size, config.bs, config.augment)
    learn = build_learner(dls, config, resolve_arch(config.arch, False, None), tmp_path)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(config.epochs, config.lr)  # 4 optimizer steps an epoch
    exported = probabilities(learn.model, dls.valid)
    measured = probabilities(measured_statistics(learn.model, dls.train.new(bs=len(train), shuffle=False, drop_last=False)), dls.valid)
    # The mean gap over the 20 photos, seeds 42, 1 and 2, on 1 and on 2 threads (an earlier
    # test may leave torch on 1): 0.043-0.115 with training/batchnorm.py (its batches of 8 are
    # a noisy estimate; 85-95 % of the answers the same), 0.251-0.507 without it (40-70 %).
    # The largest gap is too noisy to bound: 0.14-0.54 with it, 0.68-0.99 without.
    gap = (exported - measured).abs().max(dim=1).values.mean()
    assert gap < 0.18, gap


def loads_in_one_epoch(tmp_path, monkeypatch) -> tuple[int, int]:
    """(images the DataLoaders loaded in a 1-epoch fit, images in the training and validation
    sets: an epoch loads each once, the incomplete last batch's too, which fastai drops)."""
    import classifier.images

    root = write_labelled_photos(tmp_path / "photos", 12, size=(160, 120), colours=EASY_COLOURS)
    train, valid = data.random_split(sorted(root.rglob("*.jpg")), 0.25, 42)
    ds = data.Dataset(root=root, layout="folders", vocab=["box", "disc"], train=train, valid=valid)
    config = resolve(TrainConfig(data_dir=str(root), pretrained=False, augment=False, size=32,
                                 bs=4, lr=1e-3, epochs=1, precision="fp32"))
    dls = data.dataloaders(ds, config.size, config.bs, config.augment)
    learn = build_learner(dls, config, resolve_arch(config.arch, False, None), tmp_path)
    loads = []
    load = classifier.images.RGBLoader.__call__
    monkeypatch.setattr(classifier.images.RGBLoader, "__call__",
                        lambda self, source: loads.append(source) or load(self, source))
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(1, config.lr)
    return len(loads), len(train) + len(valid)


def test_the_statistics_pass_reuses_the_epochs_inputs_instead_of_loading_them_again(tmp_path, monkeypatch):
    loaded, once_each = loads_in_one_epoch(tmp_path, monkeypatch)
    assert loaded == once_each


def test_inputs_over_the_keep_bound_are_loaded_again_for_the_statistics(tmp_path, monkeypatch):
    monkeypatch.setattr(batchnorm, "KEEP_BYTES", 0)
    loaded, once_each = loads_in_one_epoch(tmp_path, monkeypatch)
    assert loaded > once_each  # the pass drew fresh training batches
