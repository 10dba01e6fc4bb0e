"""bf16 autocast and the channels-last layout in training: on where they pay, the fit's
convolutions really run in them, and nothing of either reaches the exported model."""
from __future__ import annotations

import pytest
import torch

import classifier.engines
from tests.conftest import make_image_folder
from training import data, export, precision
from training.model import build_learner, resolve_arch
from training.train import TrainConfig, resolve


@pytest.mark.parametrize("flags, chosen", [
    (["avx2", "avx512f", "avx512_bf16"], "bf16"),   # AMD EPYC (Zen 4), Intel Cooper Lake
    (["avx2", "avx512f", "amx_bf16", "amx_tile"], "bf16"),  # Intel Sapphire Rapids
    (["avx2", "avx512f"], "fp32"),                  # bf16 emulated there: slower, not faster
    (["avx2"], "fp32"),
])
def test_auto_is_bf16_only_where_the_cpu_computes_in_it(monkeypatch, flags, chosen):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(classifier.engines, "cpu_facts", lambda: {"model": "x", "flags": flags})
    assert precision.choose("auto") == chosen
    assert resolve(TrainConfig(data_dir="photos")).precision == chosen
    assert resolve(TrainConfig()).precision == chosen  # the demo
    assert precision.choose("fp32") == "fp32" and precision.choose("bf16") == "bf16"
    assert ("emulated" in precision.describe("bf16")) == (chosen == "fp32")  # said, not refused
    assert precision.describe("fp32") == "fp32"


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("colours"), per_class=6)
    return data.find_dataset(root, 0.25, 42)


def fit_recording_conv_dtypes(small_data, tmp_path, mode: str, size: int = 32,
                              layouts: set | None = None) -> tuple[set, object]:
    """The dtypes of the first convolution's outputs in a fit (and in `layouts`, whether
    each was channels-last)."""
    config = resolve(TrainConfig(data_dir=str(small_data.root), pretrained=False, augment=False,
                                 size=size, bs=4, lr=1e-3, epochs=1, precision=mode))
    dls = data.dataloaders(small_data, config.size, config.bs, config.augment)
    learn = build_learner(dls, config, resolve_arch(config.arch, False, None), tmp_path)
    learn.remove_cbs([cb for cb in learn.cbs if type(cb).__name__ == "ProgressCallback"])
    seen = set()
    first_conv = next(m for m in learn.model.modules() if isinstance(m, torch.nn.Conv2d))
    layouts = set() if layouts is None else layouts

    def record(_module, _inputs, out):
        seen.add(out.dtype)
        layouts.add(out.is_contiguous(memory_format=torch.channels_last)
                    and not out.is_contiguous())

    hook = first_conv.register_forward_hook(record)
    learn.fit(1, config.lr)
    hook.remove()
    return seen, learn


def test_a_bf16_fit_computes_in_bf16_and_exports_fp32(small_data, tmp_path):
    seen, learn = fit_recording_conv_dtypes(small_data, tmp_path, "bf16")
    assert seen == {torch.bfloat16}  # training and validation batches
    assert not torch.is_autocast_enabled("cpu")  # left after every batch
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())
    export.portable(learn)
    assert not [cb for cb in learn.cbs if type(cb).__module__.startswith("training")]
    learn.export(tmp_path / "export.pkl")
    pickled = (tmp_path / "export.pkl").read_bytes()
    assert b"training.precision" not in pickled and b"Bf16Autocast" not in pickled
    learn.model.eval()
    with torch.no_grad():  # served in fp32: outside the fit, no autocast
        assert learn.model(torch.zeros(1, 3, 32, 32)).dtype == torch.float32


def test_fp32_fits_in_fp32(small_data, tmp_path):
    seen, _ = fit_recording_conv_dtypes(small_data, tmp_path, "fp32")
    assert seen == {torch.float32}



@pytest.mark.parametrize("size, channels_last", [(32, False), (precision.CHANNELS_LAST_MIN_SIZE, True)])
def test_the_fit_is_channels_last_from_its_size_and_exports_the_default_layout(
        small_data, tmp_path, size, channels_last):
    layouts = set()
    _, learn = fit_recording_conv_dtypes(small_data, tmp_path, "fp32", size, layouts)
    assert layouts == {channels_last}
    conv = next(m for m in learn.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()  # back to the default layout once the fit ends
    export.portable(learn)
    assert not [cb for cb in learn.cbs if type(cb).__name__ == "ChannelsLast"]
