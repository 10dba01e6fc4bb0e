"""BatchNorm statistics measured on the training images before each validation ("precise BN").

A network trained from scratch on a few hundred photos makes a few optimizer steps an epoch
(160 photos at bs 32: 5). BatchNorm's running statistics, an exponential average with
momentum 0.1 starting from mean 0 and variance 1, then still describe the first steps'
weights, not the current ones: in eval mode (validation, export, serving) the network
answered one class for every photo. On 200 phone photos (red disc or blue box, resnet18 from
scratch, 224 px) the same weights scored 100 % on validation with statistics measured on the
training images and 47.5 % with the running ones, for 6 of 8 epochs (docs/training.md). So
before each validation the statistics are measured again, with the current weights, on up to
MAX_IMAGES training images (a forward pass, no gradients): what the running averages
estimate, without their lag. In shuffled batches, as the fit sees them: the images in
folder order make one-class batches, whose averaged variances leave out the variance between
the classes (a version in tests/training/test_versions.py scored 0.683 on its frozen test
images that way, where the version it had to beat scored 1.000). Where the running averages
had no lag (many steps an epoch), the new ones equal them within noise. The epoch's own
inputs are used first, kept as the fit made them (up to KEEP_BYTES), so a small set's pass
loads and resizes no image again (0.5 s of its 1.4 s for 160 phone photos at 224 px).
"""
from __future__ import annotations

import itertools

MAX_IMAGES = 1024  # enough for the statistics; a forward pass over them is a few % of a large epoch
KEEP_BYTES = 256 << 20  # the epoch's inputs kept for the pass: 435 images at 224 px in fp32


def precise_batchnorm(autocast_bf16: bool = False):
    """A fastai callback that measures every BatchNorm layer's statistics on the training set
    before each validation; `autocast_bf16`: its forward passes run as the fit's do."""
    import torch
    from fastai.callback.core import Callback
    from fastai.torch_core import get_model

    from training import distributed

    class PreciseBatchNorm(Callback):
        order = 70  # after lr_find's LRFinder, which skips validation, and after TrainEval's eval()

        inputs: list = []  # this epoch's training inputs, as the model took them

        def before_epoch(self):
            self.inputs = []

        def after_batch(self):
            xb = self.xb[0]
            if self.training and sum(x.nbytes for x in self.inputs) + xb.nbytes <= KEEP_BYTES:
                self.inputs.append(xb)

        def after_fit(self):
            self.inputs = []

        def batches(self):
            """This epoch's inputs, then (where they were not all kept) fresh training batches,
            up to this process's share of MAX_IMAGES."""
            wanted, seen = MAX_IMAGES // distributed.world_size(), 0
            kept_all = len(self.inputs) == len(self.dls.train)
            fresh = () if kept_all else (xb for xb, *_ in self.dls.train)
            for xb in itertools.chain(self.inputs, fresh):
                if seen >= wanted:
                    return
                yield xb
                seen += len(xb)

        def before_validate(self):
            model = get_model(self.learn.model)  # a DistributedDataParallel model's own module
            layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                      and m.track_running_stats]
            if not layers:
                return
            momenta = [layer.momentum for layer in layers]
            for layer in layers:
                layer.reset_running_stats()
                layer.momentum = None  # a cumulative average over the batches below
            model.train()
            try:
                with torch.no_grad(), torch.autocast(self.dls.device.type, dtype=torch.bfloat16,
                                                     enabled=autocast_bf16):
                    for xb in self.batches():  # under several processes, each rank's share
                        model(xb)
            finally:
                self.inputs = []
                for layer, momentum in zip(layers, momenta):
                    layer.momentum = momentum
                model.eval()
            distributed.average([t for layer in layers for t in (layer.running_mean,
                                                                   layer.running_var)])

    return PreciseBatchNorm()
