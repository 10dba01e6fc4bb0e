"""Decoding at the size the model needs, measured: time per photo, memory, training, parity.

    .venv/bin/python -m benchmarks.decode_bench [--rounds 7] [--skip-memory] [--skip-train]

Every figure compares the reduced decode (the default) with EXACT_DECODE (a full decode,
what every release before it did), alternating A and B in rounds on the same input, and
prints the load average before and after each part: on a shared machine read the load beside it.

1. decode + fastai's Resize(224), per photo: a 12 MP (4032x3024) JPEG stored sideways
   with EXIF orientation 6, and the same photo as HEIC.
2. peak memory of one process decoding a 200 MP (16320x12240) baseline JPEG, reduced.
3. one training epoch (resnet18 at 224 px, from scratch) on a folder of 12 MP JPEGs,
   through our DataBlock (training/data.py).
4. a notebook export (fastai's own get_x, a full decode) served with reduced decoding:
   top-1 agreement and probability gap against learn.predict on the same files.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from PIL import Image

from classifier.images import decode_side, load_rgb
from harness import ROOT
from harness.bench_assets import smooth_photo
from harness.images import encode
from harness.machine import load_average, machine_line


def spread(values) -> str:
    ms = [v * 1000 for v in values]
    return f"{statistics.median(ms):.0f} ms (min {min(ms):.0f}, max {max(ms):.0f}, n={len(ms)})"


# ---------------------------------------------------------------- 1. per photo
def per_photo(rounds: int) -> list[str]:
    from fastai.vision.augment import Resize
    from fastai.vision.core import PILImage

    resize = Resize(224)
    side = decode_side(224)
    big = smooth_photo((4032, 3024), seed=1)
    inputs = {"12 MP JPEG, EXIF 6": encode(big, "JPEG", 6, quality=92),
              "12 MP HEIC": encode(big, "HEIF", quality=80)}
    lines = []
    for name, data in inputs.items():
        times = {"exact": [], "reduced": []}
        for _ in range(rounds):
            for mode, min_side in (("exact", None), ("reduced", side)):
                t0 = time.perf_counter()
                resize(PILImage(load_rgb(data, min_side)), split_idx=1)
                times[mode].append(time.perf_counter() - t0)
        ratio = statistics.median(times["exact"]) / statistics.median(times["reduced"])
        lines.append(f"| {name} ({len(data) / 2**20:.1f} MB) | {spread(times['exact'])} | "
                     f"{spread(times['reduced'])} | x{ratio:.1f} |")
    return lines


# ---------------------------------------------------------------- 2. memory
MEMORY = textwrap.dedent("""
    import sys
    from classifier.images import decode_side, open_checked

    def peak_mib():  # this process's own high-water mark (ru_maxrss would include the parent's)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024

    data = open(sys.argv[1], "rb").read()
    before = peak_mib()
    im = open_checked(data, min_side=decode_side(224))
    print(im.size, before, peak_mib())
""")


def tiled(tile: Image.Image, across: int, down: int) -> Image.Image:
    """A big photo made of a noisy 12 MP one (mirrored in turn), so it compresses like one."""
    w, h = tile.size
    out = Image.new("RGB", (w * across, h * down))
    mirrored = tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for i in range(across):
        for j in range(down):
            out.paste(mirrored if (i + j) % 2 else tile, (i * w, j * h))
    return out


def memory() -> list[str]:
    tile = smooth_photo((4032, 3024), seed=2)
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, across, down in (("108 MP", 3, 3), ("195 MP", 4, 4)):
            path = Path(tmp) / "big.jpg"
            big = tiled(tile, across, down)
            big.save(path, "JPEG", quality=90)
            del big
            out = subprocess.run([sys.executable, "-c", MEMORY, str(path)], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.split(")")
            size, (before, after) = out[0] + ")", out[1].split()
            notes.append(f"{name} baseline JPEG ({across * 4032}x{down * 3024}, quality 90, "
                         f"{path.stat().st_size / 2**20:.1f} MB) decoded to {size}: peak RSS "
                         f"{after} MiB, {int(after) - int(before)} MiB above the "
                         f"{before} MiB the process held with the file read")
    return notes


# ---------------------------------------------------------------- 3. training epoch
TRAIN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from fastai.vision.all import resnet18, vision_learner
    from training.data import find_dataset, dataloaders
    ds = find_dataset(Path(sys.argv[1]), valid_pct=0.25, seed=0)
    dls = dataloaders(ds, size=224, bs=4, augment=False, exact_decode=sys.argv[2] == 'exact')
    learn = vision_learner(dls, resnet18, pretrained=False)
    with learn.no_bar(), learn.no_logging():
        t0 = time.perf_counter(); learn.fit(1); print(time.perf_counter() - t0)
""")


def training_epoch(rounds: int, per_class: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        for label, colour in (("red", (220, 30, 30)), ("blue", (30, 40, 220))):
            (Path(tmp) / label).mkdir()
            for i in range(per_class):
                (Path(tmp) / label / f"{i}.jpg").write_bytes(
                    encode(smooth_photo((4032, 3024), seed=100 + i, colour=colour), "JPEG", 6,
                           quality=92))
        times = {"exact": [], "reduced": []}
        for _ in range(rounds):
            for mode in times:
                out = subprocess.run([sys.executable, "-c", TRAIN, tmp, mode], cwd=ROOT,
                                     capture_output=True, text=True, check=False)
                if out.returncode:
                    raise RuntimeError(out.stderr[-2000:])
                times[mode].append(float(out.stdout.split()[-1]))
    ratio = statistics.median(times["exact"]) / statistics.median(times["reduced"])
    return (f"| one epoch, {2 * per_class} photos of 12 MP, resnet18 224 px, bs 4 | "
            f"{spread(times['exact'])} | {spread(times['reduced'])} | x{ratio:.1f} |")


# ---------------------------------------------------------------- 4. notebook parity
NOTEBOOK = textwrap.dedent("""
    import sys
    from fastai.vision.all import *
    path, out = Path(sys.argv[1]), Path(sys.argv[2])
    dls = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
                    splitter=RandomSplitter(valid_pct=0.2, seed=42), get_y=parent_label,
                    item_tfms=Resize(64)).dataloaders(path, bs=8, num_workers=0)
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=error_rate)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(6, 1e-2)
    learn.export(out)
""")


def notebook_gap(n_valid: int) -> str:
    from classifier.images import open_checked
    from classifier.inference import Predictor
    from classifier.model_files import load_learner_checked

    colours = {"red": (200, 60, 40), "green": (60, 170, 60), "blue": (50, 70, 200)}
    with tempfile.TemporaryDirectory() as tmp:
        train, valid = Path(tmp) / "train", Path(tmp) / "valid"
        for label, colour in colours.items():
            for folder, n, seed in ((train, 12, 0), (valid, n_valid // 3, 1000)):
                (folder / label).mkdir(parents=True)
                for i in range(n):
                    size = (1024, 768) if i % 2 else (768, 1024)
                    im = smooth_photo(size, seed=seed + i)
                    im.paste(colour, (size[0] // 5, size[1] // 5, size[0] * 3 // 5,
                                      size[1] * 3 // 5))
                    (folder / label / f"{i}.jpg").write_bytes(encode(im, "JPEG", quality=90))
        model = Path(tmp) / "export.pkl"
        subprocess.run([sys.executable, "-c", NOTEBOOK, str(train), str(model)], cwd=ROOT,
                       check=True, capture_output=True)
        learn, _ = load_learner_checked(model)
        predictor = Predictor(learn)
        side = predictor.decode_side()
        gaps, agree, right, top, files = [], 0, 0, [], sorted(valid.rglob("*.jpg"))
        for path in files:
            with learn.no_bar():
                _, index, probs = learn.predict(path)
            ours = predictor.predict(open_checked(path.read_bytes(), min_side=side))
            agree += ours.index == int(index)
            right += predictor.vocab[int(index)] == path.parent.name
            top.append(float(probs.max()))
            gaps.append(float(np.abs(np.array(list(ours.probabilities.values()))
                                     - probs.numpy()).max()))
    return (f"notebook export (Resize(64), fastai's get_x; learn.predict accuracy "
            f"{right}/{len(files)}, median top probability {statistics.median(top):.3f}), "
            f"{len(files)} validation photos of 1024x768 served decoded at >= {side} px: "
            f"top-1 agreement {agree}/{len(files)}, largest probability gap {max(gaps):.2e}, "
            f"median {statistics.median(gaps):.2e}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--train-rounds", type=int, default=2)
    parser.add_argument("--train-photos", type=int, default=6, help="per class (2 classes)")
    parser.add_argument("--valid", type=int, default=60)
    parser.add_argument("--skip-photo", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-parity", action="store_true")
    args = parser.parse_args(argv)
    print(f"start: {machine_line()}", flush=True)
    rows = ["| input | exact decode (EXACT_DECODE=true) | reduced (default) | speed-up |",
            "|---|---:|---:|---:|"]
    if not args.skip_photo:
        rows += per_photo(args.rounds)
        print("\n".join(rows) + f"\n(after per-photo: {load_average()})", flush=True)
    if not args.skip_train:
        rows.append(training_epoch(args.train_rounds, args.train_photos))
        print(rows[-1] + f"\n(after training: {load_average()})", flush=True)
    notes = []
    if not args.skip_memory:
        notes += memory()
        print("\n".join(notes) + f"\n(after memory: {load_average()})", flush=True)
    if not args.skip_parity:
        notes.append(notebook_gap(args.valid))
        print(notes[-1] + f"\n(after parity: {load_average()})", flush=True)
    print("\n" + "\n".join(rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)
          + f"\n\nend: {load_average()}")


if __name__ == "__main__":
    main()
