"""training.fit's phases are fastai's `fine_tune` (and plain `fit_one_cycle` from scratch), spelled
out so a run can resume inside either phase. fastai's own `Learner.fine_tune` and our
`resumable_fit` drive the same recording stand-in for a Learner; the freeze state, epochs,
learning rates and every `fit_one_cycle` argument (its defaults filled in) must match, so the
test fails if either side drifts: a fastai upgrade or an edit of `phases()`."""
from __future__ import annotations

import inspect

import pytest
import torch
from fastai.callback.schedule import Learner  # the import that adds fine_tune and fit_one_cycle

from training import fit
from training.train import TrainConfig

FIT_ONE_CYCLE = inspect.signature(Learner.fit_one_cycle)


def rounded(value):
    """Learning rates compared to 12 significant digits: lr/2/100 and lr/200 are the same rate."""
    if isinstance(value, slice):
        return slice(rounded(value.start), rounded(value.stop), value.step)
    return float(f"{value:.12g}") if isinstance(value, float) else value


class RecordingLearner:
    """Stands in for a fastai Learner: records freeze/unfreeze and every fit_one_cycle argument
    as fastai would see it (positional or keyword, defaults filled in). `cbs` is left out: our
    callbacks keep the books and the checkpoint, they do not change the schedule."""

    def __init__(self):
        self.calls: list = []
        self.model, self.opt = torch.nn.Linear(1, 1), None

    def freeze(self):
        self.calls.append("freeze")

    def unfreeze(self):
        self.calls.append("unfreeze")

    def fit_one_cycle(self, *args, **kwargs):
        bound = FIT_ONE_CYCLE.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = {k: rounded(v) for k, v in bound.arguments.items() if k not in ("self", "cbs")}
        self.calls.append(("fit_one_cycle", arguments))

    def add_cb(self, cb):
        cb.learn = self

    def remove_cb(self, cb):
        pass


def ours(tmp_path, config: TrainConfig, saved: dict | None = None) -> list:
    learn = RecordingLearner()
    run = fit.TrainingRun(config, tmp_path / "export.pkl", fit.SignalStop(), plain=True)
    fit.resumable_fit(learn, run, saved)
    return learn.calls


def fastais_fine_tune(epochs: int, lr: float) -> list:
    learn = RecordingLearner()
    Learner.fine_tune(learn, epochs, base_lr=lr)
    return learn.calls


def config(**settings) -> TrainConfig:
    return TrainConfig(data_dir="photos", size=32, augment=False, **settings)


@pytest.mark.parametrize("epochs, lr", [(1, 1e-3), (4, 3.7e-3), (7, 2e-2)])
def test_fine_tuning_is_fastais_fine_tune(tmp_path, epochs, lr):
    expected = fastais_fine_tune(epochs, lr)
    assert [c if isinstance(c, str) else c[1]["pct_start"] for c in expected] == \
        ["freeze", 0.99, "unfreeze", 0.3]  # the recorder sees what fine_tune does
    assert ours(tmp_path, config(pretrained=True, epochs=epochs, lr=lr)) == expected


@pytest.mark.parametrize("epochs, lr", [(1, 1e-3), (10, 3.7e-3)])
def test_training_from_scratch_is_fastais_fit_one_cycle(tmp_path, epochs, lr):
    fastai = RecordingLearner()
    fastai.fit_one_cycle(epochs, lr)  # fastai's defaults, no other argument
    expected = ["unfreeze", *fastai.calls]
    assert ours(tmp_path, config(pretrained=False, epochs=epochs, lr=lr)) == expected


def test_a_resume_inside_the_unfrozen_phase_continues_fine_tunes_schedule(tmp_path):
    """Phase 1 (unfrozen), 2 epochs done: fine_tune's second fit, from epoch 2."""
    unfreeze, (name, arguments) = fastais_fine_tune(4, 1e-3)[2:]
    saved = {"model": torch.nn.Linear(1, 1).state_dict(), "opt": None, "history": [],
             "phase": 1, "epoch": 2}
    assert ours(tmp_path, config(pretrained=True, epochs=4, lr=1e-3), saved) == \
        [unfreeze, (name, {**arguments, "start_epoch": 2})]
