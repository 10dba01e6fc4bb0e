"""The fit of a training run: its phases, interruptible and resumable, on fastai's own callbacks.

A run is one or two fastai one-cycle fits ("phases"): from scratch, one fit; fastai's
`fine_tune`, one frozen epoch and then the unfrozen epochs. After every epoch the run's state
is written to its checkpoint (training/checkpoint.py), *before* that epoch's line is printed:
a printed epoch is a saved epoch, even when the process is then killed without warning
(SIGKILL, the OOM killer, a lost machine). Ctrl-C or SIGTERM finishes the current batch,
saves the state and stops; `--resume` continues with fastai's `fit_one_cycle(start_epoch=...)`.

fastai keeps the books: its Recorder logs each epoch, SaveModelCallback keeps the best epoch's
weights and EarlyStoppingCallback counts the patience (these two only with --early-stop). The
small subclasses below make them last across the fits of a run and across a resume.
`resumable_fit(learn, ...)` is the one entry point: it takes a built learner and runs the phases.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import signal
from pathlib import Path

from fastai.callback.core import Callback, CancelFitException
from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback
from fastai.torch_core import distrib_barrier, get_model

from training import checkpoint, distributed


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM."""


class SignalStop:
    """SIGINT/SIGTERM handlers for the whole run. Inside a fit a signal only sets `signum`, and
    training stops after the current batch (so the saved state is consistent); anywhere else
    (reading data, lr_find, exporting) it raises Interrupted at once."""

    def __init__(self):
        self.signum: int | None = None
        self.in_fit = False

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def handle(self, signum, _frame):
        if self.in_fit and self.signum is not None and distributed.world_size() > 1:
            return  # a launcher passes on the Ctrl-C that the terminal sent too; it kills the
            # processes itself when they have not stopped after its timeout (30 s)
        if self.signum is not None or not self.in_fit:
            raise Interrupted()
        self.signum = signum
        if distributed.is_main():
            print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this batch...",
                  flush=True)

    def ignore(self):
        """While the checkpoint is written after a signal, a second one must not cut it short."""
        for s in self.previous:
            signal.signal(s, signal.SIG_IGN)


class SkipsResumedEpochs:
    """fastai still calls after_epoch for the epochs that `start_epoch` skips (on resume);
    those have no recorded values, so the trackers must not look at them."""

    def after_epoch(self):
        if len(self.recorder.values[-1]):
            super().after_epoch()


class BestWeights(SkipsResumedEpochs, SaveModelCallback):
    """fastai's SaveModelCallback: saves the best epoch's weights (lowest valid_loss) beside the
    checkpoint and loads them at the end of each fit. Its best value is kept across the fits of
    a run, and the file is written atomically, so a resumed run still finds the best epoch."""

    def __init__(self, file: Path):
        super().__init__(monitor="valid_loss", fname=str(file.with_suffix("")), reset_on_fit=False)
        self.file, self.best_epoch = file, None

    def _save(self, name):  # SaveModelCallback's one writer, made atomic
        checkpoint.write(get_model(self.learn.model).state_dict(), self.file)
        self.last_saved_path = self.file

    def after_epoch(self):
        with contextlib.redirect_stdout(io.StringIO()):  # its note numbers epochs per fit, from 0
            super().after_epoch()


class EarlyStop(SkipsResumedEpochs, EarlyStoppingCallback):
    """fastai's EarlyStoppingCallback, its patience counted across the fits of a run. It only
    notes the stop; TrainingRun saves and prints the epoch first, then cancels the fit."""

    stopped = False

    def __init__(self, patience: int):
        super().__init__(monitor="valid_loss", patience=patience, reset_on_fit=False)

    def before_fit(self):
        wait = getattr(self, "wait", 0)
        super().before_fit()
        self.wait = wait

    def after_epoch(self):
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # TrainingRun prints the reason itself
                super().after_epoch()
        except CancelFitException:
            self.stopped = True


class TrainingRun(Callback):
    """The run's history across its fits: after each epoch it writes the checkpoint, then prints
    the epoch's line (on a terminal fastai's progress bars show it instead), and after each
    batch it stops the fit when a signal came (to any of the processes, under a launcher)."""

    order = EarlyStoppingCallback.order + 1  # after the trackers have seen the epoch

    def __init__(self, config, out: Path, stop: SignalStop, plain: bool):
        self.config, self.out, self.stop, self.plain = config, out, stop, plain
        self.total = config.epochs + (1 if config.fine_tune else 0)
        self.history: list[dict] = []
        self.phase, self.next_epoch = 0, 0  # where a resume starts
        self.best = BestWeights(checkpoint.best_weights_path(out)) if config.early_stop else None
        self.early = EarlyStop(config.early_stop) if config.early_stop else None

    @property
    def callbacks(self) -> list:
        return [cb for cb in (self, self.best, self.early) if cb is not None]

    def before_epoch(self):
        self.next_epoch = max(self.next_epoch, self.epoch)  # cut short by a signal: restarts

    def after_batch(self):
        if distributed.any_rank(self.stop.signum is not None):
            raise Interrupted()

    def after_epoch(self):
        if not len(self.recorder.values[-1]):
            return  # skipped while resuming
        names = self.recorder.metric_names[1:]
        row = dict(zip(names, self.recorder.log[1:]))
        self.history.append({"epoch": len(self.history) + 1, "phase": self.phase,
                             "train_loss": float(row["train_loss"]),
                             "valid_loss": float(row["valid_loss"]),
                             "accuracy": float(row["accuracy"]), "time": row["time"]})
        if self.best is not None and self.best.new_best:
            self.best.best_epoch = len(self.history)
        self.next_epoch = self.epoch + 1
        self.save()
        distrib_barrier()  # the other ranks go on once rank 0's files are there (best weights)
        if self.plain:
            self.print_row(self.history[-1])
        if self.early is not None and self.early.stopped:
            print(f"early stop: valid_loss has not improved for {self.config.early_stop} "
                  f"epoch(s) since epoch {self.best.best_epoch}", flush=True)
            raise CancelFitException()

    HEADER = f"{'epoch':<9}{'train_loss':>11}{'valid_loss':>11}{'accuracy':>10}{'time':>8}"

    def print_row(self, e: dict) -> None:
        if len(self.history) == 1 or e["epoch"] == 1:
            print(self.HEADER, flush=True)
        print(f"{str(e['epoch']) + '/' + str(self.total):<9}{e['train_loss']:>11.4f}"
              f"{e['valid_loss']:>11.4f}{e['accuracy']:>10.4f}{e['time']:>8}", flush=True)

    @property
    def best_epoch(self) -> int | None:
        return self.best.best_epoch if self.best else None

    def save(self) -> None:
        """The checkpoint: everything `restore` needs to continue at (phase, next_epoch)."""
        learn = self.learn
        state = {"config": dataclasses.asdict(self.config),
                 "vocab": [str(v) for v in learn.dls.vocab],
                 "model": get_model(learn.model).state_dict(),  # not DDP's "module." names
                 "opt": learn.opt.state_dict() if learn.opt else None,
                 "phase": self.phase, "epoch": self.next_epoch, "history": self.history,
                 "best": self.best.best if self.best else None, "best_epoch": self.best_epoch,
                 "wait": self.early.wait if self.early else 0,
                 "stopped_early": bool(self.early and self.early.stopped)}
        checkpoint.write(state, checkpoint.checkpoint_path(self.out))

    def restore(self, saved: dict) -> None:
        learn = self.learn
        learn.model.load_state_dict(saved["model"])
        if saved["opt"] is not None:
            learn.create_opt()
            learn.opt.load_state_dict(saved["opt"])
        self.history = saved["history"]
        if self.best is not None:
            self.best.best, self.best.best_epoch = saved["best"], saved["best_epoch"]
            self.early.wait, self.early.stopped = saved["wait"], saved["stopped_early"]


def phases(config, lr: float) -> list[tuple[bool, int, object, dict]]:
    """(frozen, epochs, lr_max, fit_one_cycle options) per fit. fastai's fine_tune, spelled out
    so a run can resume inside either phase: 1 frozen epoch (its slice(lr) gives the body's
    BatchNorm layers lr/10), then `epochs` unfrozen. tests/training/test_fit.py pins it to
    fastai's own fine_tune."""
    if not config.fine_tune:
        return [(False, config.epochs, lr, {})]
    return [(True, 1, slice(lr), {"pct_start": 0.99}),
            (False, config.epochs, slice(lr / 2 / 100, lr / 2), {"pct_start": 0.3, "div": 5.0})]


def resumable_fit(learn, progress: TrainingRun, saved: dict | None) -> None:
    """Run the phases (from the checkpoint's phase and epoch when resuming). On a signal the
    checkpoint is written and Interrupted raised; `progress` holds the history."""
    import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)

    config, stop = progress.config, progress.stop
    learn.add_cb(progress)  # gives it .learn; the trackers join for each fit below
    start_phase, start_epoch = 0, 0
    if progress.best is not None and not saved:
        progress.best.file.unlink(missing_ok=True)  # an abandoned run's best epoch
    if saved:
        progress.restore(saved)
        start_phase, start_epoch = saved["phase"], saved["epoch"]
    stop.in_fit = True
    try:
        for i, (frozen, epochs, lr_max, options) in enumerate(phases(config, config.lr)):
            if i < start_phase or (progress.early and progress.early.stopped):
                continue
            first = start_epoch if i == start_phase else 0
            progress.phase, progress.next_epoch = i, first
            learn.freeze() if frozen else learn.unfreeze()
            learn.fit_one_cycle(epochs, lr_max, cbs=progress.callbacks[1:], start_epoch=first,
                                **options)
    except KeyboardInterrupt:
        stop.ignore()
        progress.save()
        raise
    finally:
        stop.in_fit = False
        learn.remove_cb(progress)
    if progress.best is not None and progress.best.file.exists():
        learn.load(progress.best.file.with_suffix(""), with_opt=False)  # also after a resume
        if progress.best_epoch != len(progress.history):
            print(f"kept the best epoch's weights: epoch {progress.best_epoch} "
                  f"(valid_loss {progress.best.best:.4f})", flush=True)
