"""How the fit computes: bf16 autocast where the hardware computes in bf16, and the
channels-last memory layout for images large enough to gain from it (channels_last).

On a CPU with AVX-512 BF16 or AMX, a training step of resnet18 at 224 px (bs 32) took 1.0 s
in bf16 autocast against 1.9 s in fp32 (AMD EPYC, AVX-512 BF16, no AMX; docs/training.md);
on a CPU without either, bf16 is emulated and slower, so `auto` keeps fp32 there. The weights,
the optimizer and the exported model stay fp32: autocast only runs the forward pass's matrix
work in bf16, and the model is evaluated and served in fp32 after the fit. On the digits
demo (24 px) bf16 was 7 % faster over a whole run, with the same accuracy within one image.
"""
from __future__ import annotations

CHOICES = ("auto", "bf16", "fp32")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def choose(requested: str) -> str:
    """--precision -> "bf16" or "fp32": `auto` is bf16 on a GPU or CPU that computes in it."""
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    from classifier.engines import cpu_facts

    return "bf16" if set(BF16_CPU_FLAGS) & set(cpu_facts()["flags"]) else "fp32"


def describe(chosen: str) -> str:
    """The run's precision for its first line; a bf16 asked for where `auto` would not choose it
    is said to be emulated (a resnet18 step is then slower than in fp32, not faster)."""
    if chosen != "bf16":
        return "fp32"
    return "bf16 autocast" + ("" if choose("auto") == "bf16" else
                              " (this machine has no bf16 units: emulated, slower than fp32)")


def bf16_autocast():
    """A fastai callback running each batch's forward pass and loss under torch.autocast(bf16)
    on the dataloaders' device: fastai's own MixedPrecision autocasts on CUDA only. No
    GradScaler: bf16 has fp32's range."""
    import torch
    from fastai.callback.core import Callback
    from fastai.torch_core import to_float

    class Bf16Autocast(Callback):
        order = 10  # fastai's MixedPrecision's place

        autocast = None

        def before_batch(self):
            self.autocast = torch.autocast(self.dls.device.type, dtype=torch.bfloat16)
            self.autocast.__enter__()

        def after_pred(self):
            self.learn.pred = to_float(self.pred)

        def after_loss(self):  # the backward pass runs outside autocast, as torch prescribes
            self.leave()

        def after_batch(self):  # a batch cut short before its loss (a signal, a cancel)
            self.leave()

        def leave(self):
            if self.autocast is not None:
                self.autocast.__exit__(None, None, None)
                self.autocast = None

    return Bf16Autocast()


# The smallest training size fitted in channels-last layout. resnet18 on 2 cores (AMD EPYC,
# AVX-512 BF16; docs/training.md): a step at 224 px, bs 32, took 1.04 s against 1.27 s in bf16
# and 1.87 against 2.24 in fp32; at 128 px 0.37 against 0.41 (bf16); at 32 px, bs 64, bf16 was
# slower (0.16 against 0.13 s).
CHANNELS_LAST_MIN_SIZE = 64


def channels_last():
    """A fastai callback fitting the network in channels-last memory layout (oneDNN's
    convolutions are faster on it), and turning it back to the default layout after the fit,
    so what is exported, checked and served is laid out as before."""
    import torch
    from fastai.callback.core import Callback

    class ChannelsLast(Callback):
        order = -1  # before a distributed run wraps the model (its ranks must agree on layouts)

        def before_fit(self):
            self.learn.model.to(memory_format=torch.channels_last)

        def after_fit(self):
            self.learn.model.to(memory_format=torch.contiguous_format)

    return ChannelsLast()
