"""Train an image classifier on a folder of labelled images and export it for serving.

    python -m training.train [DATA_DIR] [options]

DATA_DIR is DATA_DIR/<label>/<image> (random split) or DATA_DIR/train|valid[|test]/<label>/<image>.
Without DATA_DIR it trains the demo: scikit-learn's handwritten digits, written once to
data/digits/. Writes one version, atomically, into the folder of --out (the MODEL_PATH served,
default models/export.pkl): versions/<name>/ with export.pkl, export.json, examples/, report/ and
the ONNX graph; the first one goes live (training/versions.py). See docs/training.md.

Read it top to bottom, like nanoGPT's train.py: options -> TrainConfig -> data -> learner ->
learning rate -> fit -> evaluate -> export. The fit's phases and callbacks live in fit.py, its
checkpoint files in checkpoint.py, the export's files in export.py, the network in model.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import shutil
import signal
import sys
import tempfile
import time
import typing
import warnings
from pathlib import Path

from classifier import storage
from training import OneLineParser, UsageError, precision

# Defaults. Each is a measured choice; docs/training.md says why, docs/decisions.md has the runs.
DEFAULT_OUT = "models/export.pkl"
DEFAULT_SIZE = 224          # photos; pretrained ImageNet models are trained at 224 px
DEFAULT_BS = 64
MIN_BATCHES = 10            # the default bs is lowered so an epoch has at least this many batches
MIN_BS = 8
PRETRAINED_EPOCHS = 4       # fastai's tutorial recipe: fine_tune(4)
SCRATCH_EPOCHS = 10         # from scratch needs more passes than fine-tuning
DEMO_SIZE = 24              # the demo's digits are 8x8 scans, so a small input is plenty
DEMO_EPOCHS = 5
DEMO_AUGMENT = False        # flips and rotations turn some digits into others
LR_FLOOR, LR_CEILING = 1e-4, 1e-2   # the lr_find suggestion is clipped to this range


def option(default, help: str, *, metavar=None, flag=None, path=False) -> dataclasses.Field:
    """A TrainConfig field that is also a command-line option, defined once: build_parser() makes
    the argument from its name (`flag`: --name-with-dashes unless given), type, default and help.
    `path`: --resume compares the value as a resolved path."""
    return dataclasses.field(default=default, metadata={"help": help, "metavar": metavar,
                                                        "flag": flag, "path": path})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run, each one a command-line option (its --help text is here); the one
    format for export.json's "training" and the checkpoint (`--resume`: TrainConfig(**saved)).
    None: a default that depends on other settings, filled in by `resolve` (bs, lr: later)."""
    data_dir: str | None = option(None, "labelled images; omit for the digits demo",
                                  flag="DATA_DIR", path=True)
    extra: str | None = option(None, "more TRAINING images as DIR/<label>/<image> (the web app's "
                               "FEEDBACK_DIR, a folder or s3://BUCKET/PREFIX); never used for "
                               "validation or test",
                               metavar="DIR", path=True)
    valid_pct: float = option(0.2, "fraction held out for validation (layout DATA_DIR/<label>/)")
    test_pct: float = option(0.1, "fraction of the training split the first version of a models "
                             "folder freezes as its test set when DATA_DIR has no test/ folder")
    seed: int = option(42, "random seed, split and training")
    arch: str = option("resnet18", "torchvision/fastai architecture name (timm names when timm "
                       "is installed)")
    pretrained: bool | None = option(None, "start from ImageNet weights and fine_tune (default: "
                                     "yes for your data, no for the demo); --no-pretrained "
                                     "trains from scratch with one-cycle")
    weights: str | None = option(None, "local torchvision-format state dict to fine-tune from "
                                 "(air-gapped machines)", metavar="FILE", path=True)
    epochs: int | None = option(None, f"training epochs (default: {PRETRAINED_EPOCHS} fine-tuning, "
                                f"{SCRATCH_EPOCHS} from scratch, {DEMO_EPOCHS} for the demo)")
    size: int | None = option(None, f"input size in pixels (default: {DEFAULT_SIZE}; {DEMO_SIZE} "
                              "for the demo)")
    bs: int | None = option(None, f"batch size (default: {DEFAULT_BS}, lowered for small datasets "
                            f"so an epoch has at least {MIN_BATCHES} batches, not below {MIN_BS})")
    lr: float | None = option(None, "learning rate (default: the learning-rate finder's "
                              f"suggestion, kept within {LR_FLOOR:g}..{LR_CEILING:g})")
    augment: bool | None = option(None, "RandomResizedCrop + aug_transforms (default: yes; no "
                                  "for the demo)")
    precision: str = option("auto", "bf16 autocast for the fit, or fp32; auto: bf16 where the "
                            "CPU has AVX-512 BF16 or AMX, or the GPU has bf16 (about 1.9x "
                            "faster on such a CPU at 224 px), else fp32. The model is "
                            "exported in fp32")
    early_stop: int = option(0, "stop when valid_loss has not improved for N epochs and keep the "
                             "best epoch's weights; 0 is off", metavar="N")

    @property
    def fine_tune(self) -> bool:
        return bool(self.pretrained or self.weights)


def flag(field: dataclasses.Field) -> str:  # --valid-pct, DATA_DIR
    return field.metadata["flag"] or "--" + field.name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """The TrainConfig fields as arguments, then --resume and --out. Options left out are absent
    from the result (SUPPRESS), so --resume can tell which were given."""
    p = OneLineParser(prog="python -m training.train", description=__doc__.split("\n\n")[0],
                      argument_default=argparse.SUPPRESS)
    types = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        kind = (typing.get_args(types[field.name]) or [types[field.name]])[0]  # int | None: int
        how = {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind}
        help = field.metadata["help"] + ("" if field.default is None else f" (default {field.default})")
        if flag(field).startswith("--"):
            p.add_argument(flag(field), dest=field.name, metavar=field.metadata["metavar"],
                           help=help, **how)
        else:  # DATA_DIR, positional and optional
            p.add_argument(field.name, nargs="?", metavar=flag(field), help=help, **how)
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run that wrote to --out, from its checkpoint")
    p.add_argument("--out", type=Path, help="the MODEL_PATH served; versions are written to "
                   f"versions/ in its folder (default {DEFAULT_OUT})")
    return p


def parse_config(argv=None) -> tuple[TrainConfig, Path, dict | None]:
    """The command line -> (config, --out, the checkpoint when resuming). Bad values: UsageError."""
    from training import checkpoint
    given = vars(build_parser().parse_args(argv))
    out = given.pop("out", Path(DEFAULT_OUT))
    if out.suffix != ".pkl" or out.is_dir():
        raise UsageError(f"--out must name a .pkl file (e.g. {DEFAULT_OUT}), not {out}.")
    if not given.pop("resume", False):
        return resolve(TrainConfig(**given)), out, None
    saved = checkpoint.load(out)
    try:
        config = TrainConfig(**saved["config"])
    except TypeError:
        raise UsageError(f"--resume: the checkpoint beside {out} is from another version; start "
                         "a new run without --resume.") from None
    fields = {field.name: field for field in dataclasses.fields(TrainConfig)}
    for name, value in given.items():  # a flag that would change the run is refused, not dropped
        kept = getattr(config, name)
        paths = fields[name].metadata["path"] and value and kept
        if (Path(value).resolve() != Path(kept).resolve()) if paths else value != kept:
            raise UsageError(f"--resume continues the interrupted run with its own settings: "
                             f"{flag(fields[name])} {value} differs from its {kept}; drop "
                             f"{flag(fields[name])}, or start a new run without --resume.")
    return config, out, saved


def resolve(c: TrainConfig) -> TrainConfig:
    """Fill the defaults that depend on the demo or on pretraining; reject bad values."""
    demo = c.data_dir is None
    if c.weights is not None:
        if c.pretrained is False:
            raise UsageError("--weights FILE fine-tunes from that file; drop --no-pretrained.")
        if not Path(c.weights).is_file():
            raise UsageError(f"--weights file {c.weights} does not exist.")
    pretrained = (not demo and c.weights is None) if c.pretrained is None else c.pretrained
    c = dataclasses.replace(c, pretrained=pretrained)
    epochs = DEMO_EPOCHS if demo else PRETRAINED_EPOCHS if c.fine_tune else SCRATCH_EPOCHS
    c = dataclasses.replace(c, epochs=epochs if c.epochs is None else c.epochs,
                            size=(DEMO_SIZE if demo else DEFAULT_SIZE) if c.size is None else c.size,
                            augment=(DEMO_AUGMENT if demo else True) if c.augment is None else c.augment)
    for name in ("valid_pct", "test_pct"):
        if not 0 < getattr(c, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be between 0 and 1, not "
                             f"{getattr(c, name):g}.")
    for name in ("epochs", "size", "bs"):
        if getattr(c, name) is not None and getattr(c, name) < 1:
            raise UsageError(f"--{name} must be at least 1, not {getattr(c, name)}.")
    if c.size < 16:
        raise UsageError(f"--size must be at least 16 pixels, not {c.size}.")
    if c.lr is not None and not 0 < c.lr < 10:
        raise UsageError(f"--lr must be a positive learning rate such as 1e-3, not {c.lr:g}.")
    if c.early_stop < 0:
        raise UsageError(f"--early-stop must be 0 (off) or a number of epochs, not {c.early_stop}.")
    if c.precision not in precision.CHOICES:
        raise UsageError(f"--precision must be one of {', '.join(precision.CHOICES)}, not "
                         f"{c.precision!r}.")
    c = dataclasses.replace(c, precision=precision.choose(c.precision))
    if c.extra is not None:
        try:
            local = storage.Store(c.extra).local
        except ValueError as exc:
            raise UsageError(f"--extra: {exc}") from None
        if local and not Path(c.extra).is_dir():
            raise UsageError(f"--extra {c.extra} is not a directory.")
    return c


def main(argv=None) -> int:
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*")  # before fastai imports torch
    from training import distributed
    from training.fit import SignalStop
    command = "python -m training.train " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        distributed.start()
        with SignalStop() as stop:
            return run(argv, command, stop)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted outside the training loop; nothing was written.", file=sys.stderr)
        return 130
    finally:
        distributed.stop()


def run(argv, command: str, stop) -> int:
    from classifier.versions import models_root
    from training import allocator, checkpoint, data, distributed, evaluate, export, fit, test_set
    from training.model import build_learner, resolve_arch
    started = time.time()
    allocator.keep_freed_memory()  # before the first decode: steps reuse what they free
    say = print if distributed.is_main() else lambda *_, **__: None  # once, not once per process
    config, out, saved = parse_config(argv)
    arch = resolve_arch(config.arch, config.fine_tune, config.weights)  # before the data is read
    if saved:
        say(f"resuming {checkpoint.checkpoint_path(out)} (phase {saved['phase']}, epoch "
            f"{saved['epoch']}) with the interrupted run's settings")
    if distributed.is_main():
        checkpoint.remove_stale_temps(out, started)

    # -- data ----------------------------------------------------------------------
    data_dir = config.data_dir
    if data_dir is None:
        from training.demo_data import write_digits
        data_dir = distributed.main_first(write_digits)
        say(f"demo: scikit-learn's handwritten digits in {data_dir}/ (pass DATA_DIR for your own images)")
    try:  # a bucket's corrections (s3://...) are copied here for the run
        extra = storage.local_copy(config.extra) if config.extra else None
    except OSError as exc:
        raise UsageError(f"--extra: {exc}") from None
    processes = distributed.world_size()
    # Verifying each photo decodes it: kept for training, where one process reads them all.
    loader = data.training_loader(config.size, config.augment)
    ds = data.find_dataset(data_dir, config.valid_pct, config.seed, extra=extra,
                           loader=loader if processes == 1 else None)
    root = models_root(out)
    ds, frozen = test_set.apply(ds, root, test_set.read(root), config.test_pct, config.seed)
    loader.cache.retain([*ds.train, *ds.valid, *ds.extra])  # not the test set's decodes
    split = f"random split {config.valid_pct:g} seed {config.seed}" if ds.layout == "folders" \
        else "train/valid folders"
    say(f"data: {ds.root} ({split}): {len(ds.vocab)} classes, {len(ds.train)} train"
        + (f" + {len(ds.extra)} from {config.extra}" if config.extra else "")
        + f", {len(ds.valid)} valid" + (f", {len(ds.test)} test" if ds.test else "") + " images")
    if ds.skipped:
        say(f"skipped {len(ds.skipped)} file(s) (left untouched):")
        for item in ds.skipped:
            say(f"  {item['path']}: {item['reason']}")
    say(test_set.describe(frozen))
    if saved and saved["vocab"] != ds.vocab:
        raise UsageError(f"--resume: the classes in {ds.root} changed since the checkpoint "
                         f"({saved['vocab']} -> {ds.vocab}); start a new run.")
    from fastai.torch_core import set_seed
    set_seed(config.seed)
    config = dataclasses.replace(config, bs=batch_size(config.bs, len(ds.train) + len(ds.extra)))
    if config.bs % processes:
        say(f"bs {config.bs} lowered to {config.bs - config.bs % processes}, a multiple of the "
            f"{processes} processes (each takes bs / {processes})")
        config = dataclasses.replace(config, bs=config.bs - config.bs % processes)
    dls = data.dataloaders(ds, config.size, config.bs, config.augment, prefill=processes == 1,
                           loader=loader)

    # -- learner -------------------------------------------------------------------
    workdir = Path(tempfile.mkdtemp(prefix="train-"))  # lr_find's scratch files, never DATA_DIR
    trained = False
    try:
        learn = build_learner(dls, config, arch, workdir)
        plain = not sys.stdout.isatty()
        if plain:  # one clean line per epoch (printed by fit.TrainingRun), no progress bars
            from fastai.callback.progress import ProgressCallback
            learn.remove_cb(ProgressCallback)
            learn.logger = lambda *args: None
        how = "fine_tune from " + ("ImageNet" if config.weights is None else config.weights) \
            if config.fine_tune else "from scratch (one-cycle)"
        say(f"model: {config.arch} {how}, {config.size}px, bs {config.bs}, "
            f"{'with' if config.augment else 'no'} augmentation, {config.epochs} epochs, "
            + precision.describe(config.precision)
            + (f", {processes} processes of bs {config.bs // processes}" if processes > 1 else ""))

        # -- learning rate -----------------------------------------------------------
        lr_source = "checkpoint" if saved else "--lr" if config.lr is not None else "lr_find"
        if config.lr is None:
            config = dataclasses.replace(config, lr=distributed.on_main(lambda: suggest_lr(learn)))

        # -- fit (a checkpoint after every epoch; Ctrl-C / SIGTERM save one and stop) --
        progress = fit.TrainingRun(config, out, stop, plain and distributed.is_main())
        try:
            with distributed.fit_context(learn):
                fit.resumable_fit(learn, progress, saved)
        except KeyboardInterrupt:
            signum = stop.signum or signal.SIGINT
            say(f"\ninterrupted ({signal.Signals(signum).name}) after {len(progress.history)} "
                f"epoch(s); checkpoint saved to {checkpoint.checkpoint_path(out)}. Continue "
                f"with: {'accelerate launch ... -m ' if processes > 1 else 'python -m '}"
                f"training.train --resume --out {out}", file=sys.stderr, flush=True)
            return 128 + signum
        distributed.stop()  # rank 0 goes on alone: it evaluates and writes the model, its
        if not distributed.is_main():  # report and its version
            return 0
        trained = True  # from here on the checkpoint goes, whether the export succeeds or fails

        # -- evaluate: the serving code path, on validation, then test once ------------
        from classifier.inference import Predictor
        predictor = Predictor(export.portable(learn), runtime="torch")
        valid_m, valid_probs, valid_t = evaluate.score(predictor, ds.valid, ds.vocab)
        print(evaluate.format_metrics(valid_m, "validation", valid_probs, valid_t))
        test_m = None
        if ds.test:
            test_m, test_probs, test_t = evaluate.score(predictor, ds.test, ds.vocab)
            print(evaluate.format_metrics(test_m, "test (scored once, after training)", test_probs, test_t))
        unsure = evaluate.choose_threshold(valid_probs, valid_t)
        print(evaluate.format_threshold(unsure))
        reference = evaluate.field_reference(predictor, ds.valid, valid_probs, ds.vocab)

        # -- export --------------------------------------------------------------------
        metadata = export.metadata(config, ds, progress, lr_source=lr_source, resumed=bool(saved),
                                   metrics={"validation": valid_m, **({"test": test_m} if test_m else {})},
                                   unsure=unsure, command=command, test_set=frozen,
                                   field_reference=reference)
        version = export.write_version(learn, root, metadata, dls, ds.valid, valid_probs,
                                       valid_t, started)
    finally:
        if trained:
            checkpoint.discard(out)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrote version {version} (export.pkl, export.json, examples/, report/report.html) "
          f"in {time.time() - started:.0f}s: validation accuracy {valid_m['accuracy']:.4f}")
    from training.versions import publish
    publish(root, version.name, ds.test, out)
    return 0


def batch_size(requested: int | None, n_train: int) -> int:
    """--bs, or the default lowered for small datasets: with 160 images, bs 64 gave 2 steps
    an epoch and 2.5% accuracy on digits; bs 16 gave 92.5% (docs/training.md)."""
    bs = requested or max(MIN_BS, min(DEFAULT_BS, n_train // MIN_BATCHES))
    return max(2, min(bs, n_train))


def suggest_lr(learn) -> float:
    """fastai's lr_find 'valley' suggestion, kept within [LR_FLOOR, LR_CEILING]: on tiny
    datasets the finder's curve is noisy and can point at extremes."""
    from fastai.callback.schedule import valley

    found = learn.lr_find(suggest_funcs=(valley,), show_plot=False).valley
    lr = float(min(max(found, LR_FLOOR), LR_CEILING))
    note = "" if lr == found else f" (clipped from {found:.2e})"
    print(f"learning rate: {lr:.2e} from lr_find{note}; pass --lr to choose", flush=True)
    return lr


if __name__ == "__main__":
    sys.exit(main())
