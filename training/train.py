"""Train an image classifier on a folder of labelled images and export it for serving.

    python -m training.train [DATA_DIR] [options]

DATA_DIR is DATA_DIR/<label>/<image> (random split) or DATA_DIR/train|valid[|test]/<label>/<image>.
Without DATA_DIR it trains the demo: scikit-learn's handwritten digits, written once
to data/digits/. Writes, atomically, beside --out (default models/export.pkl):
export.pkl, export.json (metadata), examples/<label>/ and report/. See README.md "Training".

The file reads top to bottom: options, data, model, learning rate, training
(with interrupt/resume), evaluation, export.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

from training import OneLineParser, UsageError

# ----------------------------------------------------------------------------
# Defaults. Each is a measured choice; README.md "Training" has the measurements.
DEFAULT_OUT = "models/export.pkl"
DEFAULT_SIZE = 224          # photos; pretrained ImageNet models are trained at 224 px
DEFAULT_BS = 64
MIN_BATCHES = 10            # default bs is lowered so an epoch has at least this many batches
MIN_BS = 8
PRETRAINED_EPOCHS = 4       # the seed recipe's fine_tune(4)
SCRATCH_EPOCHS = 10         # from scratch needs more passes than fine-tuning
# The demo (no DATA_DIR): 8x8 digit scans, so a small input size is plenty.
DEMO_SIZE = 24
DEMO_EPOCHS = 5
DEMO_AUGMENT = False        # flips and rotations turn some digits into others
LR_FLOOR, LR_CEILING = 1e-4, 1e-2   # the lr_find suggestion is clipped to this range
EXAMPLES_PER_CLASS = 3
CHECKPOINT_DIR = "checkpoints"      # beside --out; models/checkpoints/ is kept out of the image


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m training.train", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data_dir", nargs="?", type=Path, metavar="DATA_DIR",
                   help="labelled images; omit for the digits demo")
    p.add_argument("--valid-pct", type=float, default=0.2,
                   help="fraction held out for validation (layout DATA_DIR/<label>/)")
    p.add_argument("--seed", type=int, default=42, help="random seed (split and training)")
    p.add_argument("--arch", default="resnet18",
                   help="torchvision/fastai architecture name (timm names when timm is installed)")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                   help="start from ImageNet weights and fine_tune (default: yes for your data, "
                        "no for the demo); --no-pretrained trains from scratch with one-cycle")
    p.add_argument("--weights", type=Path, metavar="FILE",
                   help="local torchvision-format state dict to fine-tune from (air-gapped machines)")
    p.add_argument("--epochs", type=int,
                   help=f"training epochs (default: {PRETRAINED_EPOCHS} fine-tuning, "
                        f"{SCRATCH_EPOCHS} from scratch, {DEMO_EPOCHS} for the demo)")
    p.add_argument("--size", type=int,
                   help=f"input size in pixels (default: {DEFAULT_SIZE}; {DEMO_SIZE} for the demo)")
    p.add_argument("--bs", type=int, help=f"batch size (default: {DEFAULT_BS}, lowered for small "
                   f"datasets so an epoch has at least {MIN_BATCHES} batches, not below {MIN_BS})")
    p.add_argument("--lr", type=float,
                   help="learning rate (default: the learning-rate finder's suggestion, "
                        f"kept within {LR_FLOOR:g}..{LR_CEILING:g})")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="RandomResizedCrop + aug_transforms (default: yes; no for the demo)")
    p.add_argument("--early-stop", type=int, default=0, metavar="N",
                   help="stop when valid_loss has not improved for N epochs and keep the best "
                        "epoch's weights (0: off)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run that wrote to --out, from its checkpoint")
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help="where to write export.pkl")
    return p


def resolve_options(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the context-dependent defaults and reject bad values (UsageError, exit 2)."""
    demo = args.data_dir is None
    if args.weights is not None:
        if args.pretrained is False:
            raise UsageError("--weights FILE fine-tunes from that file; drop --no-pretrained.")
        if not args.weights.is_file():
            raise UsageError(f"--weights file {args.weights} does not exist.")
    if args.pretrained is None:
        args.pretrained = not demo and args.weights is None
    args.fine_tune = bool(args.pretrained or args.weights)
    if args.epochs is None:
        args.epochs = DEMO_EPOCHS if demo else PRETRAINED_EPOCHS if args.fine_tune else SCRATCH_EPOCHS
    if args.size is None:
        args.size = DEMO_SIZE if demo else DEFAULT_SIZE
    if args.augment is None:
        args.augment = DEMO_AUGMENT if demo else True
    if not 0 < args.valid_pct < 1:
        raise UsageError(f"--valid-pct must be between 0 and 1, not {args.valid_pct:g}.")
    for name in ("epochs", "size", "bs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1, not {getattr(args, name)}.")
    if args.size < 16:
        raise UsageError(f"--size must be at least 16 pixels, not {args.size}.")
    if args.lr is not None and not 0 < args.lr < 10:
        raise UsageError(f"--lr must be a positive learning rate such as 1e-3, not {args.lr:g}.")
    if args.early_stop < 0:
        raise UsageError(f"--early-stop must be 0 (off) or a number of epochs, not {args.early_stop}.")
    if args.out.suffix != ".pkl" or args.out.is_dir():
        raise UsageError(f"--out must name a .pkl file (e.g. {DEFAULT_OUT}), not {args.out}.")
    resolve_arch(args.arch, args.fine_tune, args.weights)  # fail fast on an unknown name
    return args


# ----------------------------------------------------------------------------
# Model
def resolve_arch(name: str, pretrained: bool, weights: Path | None):
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
    from fastai.vision.learner import _default_meta, create_body, model_meta

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
    body = create_body(model, 3, True, model_meta.get(arch, _default_meta)["cut"])
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


def build_learner(dls, args, arch, workdir: Path):
    """fastai's vision_learner; ImageNet weights from torch's cache, the network, or --weights."""
    from fastai.metrics import accuracy
    from fastai.vision.augment import Normalize
    from fastai.vision.core import imagenet_stats
    from fastai.vision.learner import vision_learner

    download = args.pretrained and args.weights is None
    if args.weights is not None and not isinstance(arch, str):
        dls.add_tfms([Normalize.from_stats(*imagenet_stats)], "after_batch")
    try:
        learn = vision_learner(dls, arch, pretrained=download, metrics=accuracy, path=workdir)
    except (OSError, RuntimeError) as exc:
        if not download:
            raise
        raise UsageError(f"Could not get the ImageNet weights for {args.arch} "
                         f"({type(exc).__name__}: {str(exc)[:120]}). Offline, train from scratch "
                         "with --no-pretrained, or fine-tune a local torchvision state dict with "
                         "--weights FILE.") from None
    if args.weights is not None:
        load_body_weights(learn, arch, args.weights)
        learn.pretrained = True
        learn.freeze()
    return learn


# ----------------------------------------------------------------------------
# Training loop helpers: progress lines, history, early stopping, interrupts.
class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, raised between batches so the saved state is consistent."""


class RunMonitor:
    """Owns the run's mutable state; `callback()` gives the fastai Callback that feeds it."""

    def __init__(self, total_epochs: int, early_stop: int, plain: bool):
        self.total, self.patience, self.plain = total_epochs, early_stop, plain
        self.history: list[dict] = []
        self.best_loss, self.best_epoch, self.best_state = float("inf"), None, None
        self.signal: int | None = None
        self.stopped_early = False
        self.phase, self.phase_start, self.epoch_in_phase = 0, 0, 0
        self.training = False  # inside fit: a signal waits for the end of the batch
        self.save = None  # called after every epoch: writes the checkpoint (SIGKILL loses no epoch)

    def request_stop(self, signum, frame):
        if self.signal is not None or not self.training:
            raise Interrupted()
        self.signal = signum  # acted on after the current batch
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this batch...", flush=True)

    def callback(self):
        from fastai.callback.core import Callback, CancelFitException
        from fastai.learner import Recorder

        monitor = self

        class _Monitor(Callback):
            order = Recorder.order + 1  # after Recorder has logged the epoch

            def before_epoch(self):
                monitor.epoch_in_phase = self.epoch

            def after_batch(self):
                if monitor.signal is not None:
                    raise Interrupted()

            def after_epoch(self):
                if self.epoch < monitor.phase_start:
                    return  # an epoch skipped while resuming
                names = self.recorder.metric_names[1:]
                row = dict(zip(names, self.recorder.log[1:]))
                entry = {"epoch": len(monitor.history) + 1, "phase": monitor.phase,
                         "train_loss": float(row["train_loss"]), "valid_loss": float(row["valid_loss"]),
                         "accuracy": float(row["accuracy"]), "time": row["time"]}
                monitor.history.append(entry)
                monitor.epoch_in_phase = self.epoch + 1
                if monitor.patience:
                    monitor.track_best(self.learn, entry)
                    monitor.stopped_early = entry["epoch"] - monitor.best_epoch >= monitor.patience
                if monitor.save:
                    monitor.save()  # before the epoch's line: a printed epoch is a saved epoch
                if monitor.plain:
                    monitor.print_row(entry)
                if monitor.stopped_early:
                    print(f"early stop: valid_loss has not improved for {monitor.patience} "
                          f"epoch(s) since epoch {monitor.best_epoch}", flush=True)
                    raise CancelFitException()

        return _Monitor()

    def track_best(self, learn, entry):
        if entry["valid_loss"] < self.best_loss:
            self.best_loss, self.best_epoch = entry["valid_loss"], entry["epoch"]
            self.best_state = {k: v.detach().clone() for k, v in bare(learn.model).state_dict().items()}

    HEADER = f"{'epoch':<9}{'train_loss':>11}{'valid_loss':>11}{'accuracy':>10}{'time':>8}"

    def print_row(self, e):
        if e["epoch"] == 1 or not self.history[:-1]:
            print(self.HEADER, flush=True)
        print(f"{str(e['epoch']) + '/' + str(self.total):<9}{e['train_loss']:>11.4f}"
              f"{e['valid_loss']:>11.4f}{e['accuracy']:>10.4f}{e['time']:>8}", flush=True)

    def state(self) -> dict:
        return {"history": self.history, "best_loss": self.best_loss, "best_epoch": self.best_epoch,
                "best_state": self.best_state, "stopped_early": self.stopped_early}

    def restore(self, saved: dict):
        self.history = saved["history"]
        self.best_loss, self.best_epoch = saved["best_loss"], saved["best_epoch"]
        self.best_state = saved["best_state"]
        self.stopped_early = saved.get("stopped_early", False)  # killed after an early stop


def phases(args, lr: float) -> list[dict]:
    """The one-cycle fits of a run. fine_tune is fastai's own schedule, spelled out so a
    run can resume inside either phase: 1 frozen epoch, then `epochs` unfrozen."""
    if not args.fine_tune:
        return [{"frozen": False, "epochs": args.epochs, "lr": lr, "kw": {}}]
    return [{"frozen": True, "epochs": 1, "lr": lr, "kw": {"pct_start": 0.99}},
            {"frozen": False, "epochs": args.epochs, "lr": (lr / 2 / 100, lr / 2),
             "kw": {"pct_start": 0.3, "div": 5.0}}]


def fit(learn, args, lr: float, monitor: RunMonitor, start: tuple[int, int] = (0, 0)) -> None:
    """Run the phases from (phase, epoch) on; raises Interrupted on Ctrl-C/SIGTERM."""
    import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)

    cb = monitor.callback()
    for i, ph in enumerate(phases(args, lr)):
        if i < start[0] or monitor.stopped_early:
            continue
        learn.freeze() if ph["frozen"] else learn.unfreeze()
        monitor.phase, monitor.phase_start = i, start[1] if i == start[0] else 0
        monitor.epoch_in_phase = monitor.phase_start
        lr_max = slice(*ph["lr"]) if isinstance(ph["lr"], tuple) else ph["lr"]
        learn.fit_one_cycle(ph["epochs"], lr_max, cbs=[cb], start_epoch=monitor.phase_start, **ph["kw"])
    if monitor.best_state is not None and monitor.best_epoch != len(monitor.history):
        learn.model.load_state_dict(monitor.best_state)
        print(f"kept the best epoch's weights: epoch {monitor.best_epoch} "
              f"(valid_loss {monitor.best_loss:.4f})", flush=True)


def bare(model):
    """The model itself, also while DistributedDataParallel wraps it (distributed runs)."""
    return getattr(model, "module", model)


def checkpoint_path(out: Path) -> Path:
    return out.parent / CHECKPOINT_DIR / f"{out.stem}.pth"


def discard_checkpoint(out: Path) -> None:
    path = checkpoint_path(out)
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # only when empty


def remove_stale_temps(out: Path, started: float) -> None:
    """Remove the staging files and folders (.export.<pid>.<random>.tmp and the like, beside
    --out and its checkpoint) that a killed run (SIGKILL, power loss) left behind. An entry
    whose pid is a live process other than this one is another run's and is kept; one
    without a pid (older versions) only when it predates this run."""
    for folder in (out.parent, checkpoint_path(out).parent):
        for entry in folder.glob(f".{out.stem}.*.tmp"):
            pid = entry.name[:-len(".tmp")].split(".")[-2]
            if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
                continue
            if not pid.isdigit() and entry.lstat().st_mtime >= started:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            print(f"removed {entry}, left by an interrupted run", flush=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def save_checkpoint(learn, path: Path, options: dict, lr: float, monitor: RunMonitor) -> None:
    import torch

    from classifier.model_files import atomic_path

    state = {"model": bare(learn.model).state_dict(), "opt": learn.opt.state_dict() if learn.opt else None,
             "options": options, "lr": lr, "phase": monitor.phase, "epoch": monitor.epoch_in_phase,
             "vocab": [str(v) for v in learn.dls.vocab], "monitor": monitor.state()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(out: Path) -> dict:
    import torch

    path = checkpoint_path(out)
    if not path.is_file():
        raise UsageError(f"--resume: no checkpoint at {path} (an interrupted run with "
                         f"--out {out} writes one).")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UsageError(f"--resume: checkpoint {path} is unreadable ({type(exc).__name__}).") from None


# ----------------------------------------------------------------------------
# Export: export.pkl + export.json, examples/ and report/, nothing half-written.
def portable(learn):
    """Strip what only training needs, so the pickle names nothing but fastai/torch/classifier."""
    from fastai.callback.progress import ProgressCallback

    learn.remove_cbs([cb for cb in learn.cbs if type(cb).__module__ in (__name__, "__main__")])
    if not any(isinstance(cb, ProgressCallback) for cb in learn.cbs):
        learn.add_cb(ProgressCallback())
    learn.logger = print
    learn.path, learn.model_dir = Path("."), "models"
    return learn


def export_pair(learn, out: Path, metadata: dict, started: float) -> None:
    """export.pkl and its export.json, both written and fsynced before either is renamed into
    place, the pkl first: a crash leaves a mismatched pair only between two renames."""
    from classifier.model_files import atomic_path, fsync_file, metadata_path, sha256_file

    # atomic_path renames on exit; the inner one (the pkl) exits first.
    with atomic_path(metadata_path(out)) as tmp_json, atomic_path(out) as tmp_pkl:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            learn.export(tmp_pkl.resolve(), pickle_protocol=4)  # 4: "builtins", not py2 "__builtin__"
        metadata["sha256"] = sha256_file(tmp_pkl)
        metadata["created_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        metadata["training"]["wall_time_s"] = round(time.time() - started, 1)
        tmp_json.write_text(json.dumps(metadata, indent=2, default=str) + "\n")
        fsync_file(tmp_pkl)  # the slow part (tens of MB), before any rename;
        fsync_file(tmp_json)  # atomic_path's own fsyncs then find nothing left to write


def replace_dir(new: Path, final: Path) -> None:
    """Swap a freshly written folder into place (two renames; the old one is then removed)."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def copy_examples(valid: list[Path], probs, targets, vocab: list[str], dest: Path) -> dict:
    """A few validation images per class, as examples/<label>/<file>; correctly classified
    ones first, so a click on an example shows what the model does well."""
    chosen: dict[str, list[str]] = {label: [] for label in vocab}
    order = sorted(range(len(valid)), key=lambda i: probs[i].argmax() != targets[i])
    for i in order:
        label, path = vocab[targets[i]], valid[i]
        if len(chosen[label]) < EXAMPLES_PER_CLASS:
            (dest / label).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / label / path.name)
            chosen[label].append(f"{label}/{path.name}")
    return {label: files for label, files in chosen.items() if files}


def versions() -> dict:
    import fastai
    import torch
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "fastai": fastai.__version__}


# ----------------------------------------------------------------------------
def main(argv=None) -> int:
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*")
    args = build_parser().parse_args(argv)
    command = "python -m training.train " + " ".join(shlex.quote(a) for a in
                                                     (sys.argv[1:] if argv is None else argv))
    # Before training starts (and after it ends) Ctrl-C or SIGTERM stops at once, writing nothing.
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        return run(args, command)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted outside the training loop; nothing was written.", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupted(signum, frame):
    raise Interrupted()


def run(args, command: str) -> int:
    started = time.time()
    saved = None
    if args.resume:
        saved = load_checkpoint(args.out)
        out = args.out
        args = argparse.Namespace(**saved["options"])
        args.out, args.resume = out, True
        for key in ("data_dir", "weights"):
            if getattr(args, key) is not None:
                setattr(args, key, Path(getattr(args, key)))
        print(f"resuming {checkpoint_path(out)} (phase {saved['phase']}, epoch {saved['epoch']}) "
              "with the interrupted run's options")
    else:
        args = resolve_options(args)
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
               if k not in ("out", "resume")}
    from fastai.torch_core import num_distrib, rank_distrib
    distributed, main_process = num_distrib() > 0, rank_distrib() == 0
    if main_process:
        remove_stale_temps(args.out, started)

    # -- data ---------------------------------------------------------------
    from training import data, evaluate, report
    if args.data_dir is None:
        from training.demo_data import write_digits
        args.data_dir = write_digits()
        print(f"demo: scikit-learn's handwritten digits in {args.data_dir}/ (pass DATA_DIR for your own images)")
    ds = data.find_dataset(args.data_dir, args.valid_pct, args.seed)
    split = "random split " + f"{args.valid_pct:g} seed {args.seed}" if ds.layout == "folders" \
        else "train/valid folders"
    print(f"data: {ds.root} ({split}): {len(ds.vocab)} classes, {len(ds.train)} train, "
          f"{len(ds.valid)} valid" + (f", {len(ds.test)} test" if ds.test else "") + " images")
    if ds.skipped:
        print(f"skipped {len(ds.skipped)} file(s) (left untouched):")
        for item in ds.skipped:
            print(f"  {item['path']}: {item['reason']}")
    if saved and saved["vocab"] != ds.vocab:
        raise UsageError(f"--resume: the classes in {ds.root} changed since the checkpoint "
                         f"({saved['vocab']} -> {ds.vocab}); start a new run.")

    from fastai.callback.progress import ProgressCallback
    from fastai.torch_core import set_seed
    set_seed(args.seed)
    bs = batch_size(args.bs, len(ds.train))
    dls = data.dataloaders(ds, args.size, bs, args.augment)

    # -- model --------------------------------------------------------------
    arch = resolve_arch(args.arch, args.fine_tune, args.weights)
    workdir = Path(tempfile.mkdtemp(prefix="train-"))  # lr_find's scratch files, never DATA_DIR
    trained = False
    try:
        learn = build_learner(dls, args, arch, workdir)
        plain = not sys.stdout.isatty()
        if plain:  # one clean line per epoch instead of redrawn progress bars
            learn.remove_cb(ProgressCallback)
            from fastcore.basics import noop
            learn.logger = noop
        how = "fine_tune from " + ("ImageNet" if args.weights is None else str(args.weights)) \
            if args.fine_tune else "from scratch (one-cycle)"
        print(f"model: {args.arch} {how}, {args.size}px, bs {bs}, "
              f"{'with' if args.augment else 'no'} augmentation, {args.epochs} epochs")

        # -- learning rate ----------------------------------------------------
        if saved:
            lr = saved["lr"]
        elif args.lr is not None:
            lr = args.lr
        else:
            lr = suggest_lr(learn)
        args.lr_used = lr

        # -- train, with Ctrl-C / SIGTERM saving a checkpoint ---------------
        monitor = RunMonitor(args.epochs + (1 if args.fine_tune else 0), args.early_stop, plain)
        start = (0, 0)
        if saved:
            learn.model.load_state_dict(saved["model"])
            monitor.restore(saved["monitor"])
            start = (saved["phase"], saved["epoch"])
            if saved["opt"] is not None:
                learn.create_opt()
                learn.opt.load_state_dict(saved["opt"])
        ckpt = checkpoint_path(args.out)
        if main_process:
            monitor.save = lambda: save_checkpoint(learn, ckpt, options, lr, monitor)
        handlers = {s: signal.signal(s, monitor.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        monitor.training = True
        try:
            if distributed:  # launched by `accelerate launch`; needs `pip install accelerate`
                import fastai.distributed  # noqa: F401  (adds Learner.distrib_ctx)
                with learn.distrib_ctx():
                    fit(learn, args, lr, monitor, start)
            else:
                fit(learn, args, lr, monitor, start)
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if main_process:
                save_checkpoint(learn, ckpt, options, lr, monitor)
            name = signal.Signals(monitor.signal or signal.SIGINT).name
            print(f"\ninterrupted ({name}) after {len(monitor.history)} epoch(s); checkpoint saved "
                  f"to {ckpt}. Continue with: python -m training.train --resume --out {args.out}",
                  file=sys.stderr, flush=True)
            return 128 + (monitor.signal or signal.SIGINT)
        finally:
            monitor.training = False
        # From here on a signal aborts at once; the export below is all-or-nothing.
        for s, h in handlers.items():
            signal.signal(s, h)
        if not main_process:
            return 0  # rank 0 evaluates and exports
        trained = True  # from here on the checkpoint goes, whether the export succeeds or fails

        # -- evaluate ----------------------------------------------------------
        from classifier.inference import Predictor
        from classifier.model_files import metadata_path
        portable(learn)
        predictor = Predictor(learn, runtime="torch")
        valid_m, valid_probs, valid_t = evaluate.score(predictor, ds.valid, ds.vocab)
        print(evaluate.format_metrics(valid_m, "validation"))
        test_m = None
        if ds.test:
            test_m, _, _ = evaluate.score(predictor, ds.test, ds.vocab)
            print(evaluate.format_metrics(test_m, "test (scored once, after training)"))

        # -- export ------------------------------------------------------------
        out = args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.stem}.{os.getpid()}.", suffix=".tmp", dir=out.parent))
        try:
            examples = copy_examples(ds.valid, valid_probs, valid_t, ds.vocab, staging / "examples")
            metadata = {
                "format": 1,
                "model_file": out.name,
                "vocab": ds.vocab,
                "arch": args.arch,
                "image_size": [args.size, args.size],
                "pretrained": ("imagenet" if args.weights is None else f"weights:{args.weights}")
                if args.fine_tune else False,
                "training": {"method": "fine_tune" if args.fine_tune else "fit_one_cycle",
                             "epochs": args.epochs, "epochs_run": len(monitor.history),
                             "lr": lr, "lr_source": "checkpoint" if saved else
                             "--lr" if args.lr is not None else "lr_find", "bs": bs,
                             "augment": args.augment, "seed": args.seed, "valid_pct": args.valid_pct,
                             "early_stop": args.early_stop, "best_epoch": monitor.best_epoch,
                             "resumed": bool(saved), "wall_time_s": None},
                "metrics": {"validation": valid_m, **({"test": test_m} if test_m else {})},
                "history": monitor.history,
                "dataset": ds.summary(),
                "examples": examples,
                "versions": versions(),
                "created_at": None,
                "command": command,
                "sha256": None,
            }
            report.write_report(staging / "report", dls, metadata, ds.valid,
                                valid_probs, valid_t)
            export_pair(learn, out, metadata, started)
            replace_dir(staging / "examples", out.parent / "examples")
            replace_dir(staging / "report", out.parent / "report")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        if trained:
            discard_checkpoint(args.out)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrote {out} (+ {metadata_path(out).name}, examples/, report/report.html) "
          f"in {time.time() - started:.0f}s: validation accuracy {valid_m['accuracy']:.4f}")
    return 0


def batch_size(requested: int | None, n_train: int) -> int:
    """--bs, or the default lowered for small datasets: with 160 images, bs 64 gave 2 steps
    an epoch and 2.5% accuracy on digits; bs 16 gave 92.5% (README.md "Training")."""
    bs = requested or max(MIN_BS, min(DEFAULT_BS, n_train // MIN_BATCHES))
    return max(2, min(bs, n_train))


def suggest_lr(learn) -> float:
    """fastai's lr_find 'valley' suggestion, kept within [LR_FLOOR, LR_CEILING]."""
    from fastai.callback.schedule import valley

    found = learn.lr_find(suggest_funcs=(valley,), show_plot=False).valley
    lr = float(min(max(found, LR_FLOOR), LR_CEILING))
    note = "" if lr == found else f" (clipped from {found:.2e})"
    print(f"learning rate: {lr:.2e} from lr_find{note}; pass --lr to choose", flush=True)
    return lr


if __name__ == "__main__":
    sys.exit(main())
