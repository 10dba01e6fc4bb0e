"""Classify a folder of photos offline: `python -m classifier.predict MODEL PATH... [--out F]`.

    python -m classifier.predict models/export.pkl ~/photos --out results.csv

PATHs are image files or folders (searched recursively for .jpg, .png, ...), or
s3://BUCKET/PREFIX (copied to a temporary folder first, named by their object). Each
row: path, label, confidence, unsure (when the model's export.json has a threshold),
version (the model's, as the server's answers name it), one probability per class, and error (why a file could not be read; such files never
stop the run). The output is CSV, or JSON lines for a .jsonl name, written to stdout
without --out, and atomically (all or nothing) with it. Decoding, loading and inference
are the server's own (classifier.images.open_checked, classifier.loader.load_model), so
the lean image, which has no torch, runs it on the compiled graph.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from classifier import storage
from classifier.image_files import find_image_files
from classifier.images import DEFAULT_MAX_IMAGE_PIXELS, ImageError, open_checked
from classifier.loader import RUNTIMES
from classifier.model_files import ModelLoadError, atomic_path
from classifier.versions import VersionError, served_model_path, served_version

BATCH = 16  # images per forward pass; decoding, not the model, dominates for photos


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def find_images(paths: list[str]) -> tuple[list[Path], dict[str, str]]:
    """Files named directly (whatever their extension) and images found under folders and
    under s3:// prefixes (copied here first); and the name to show for each copied file."""
    found, shown = [], {}
    for given in paths:
        try:
            local = storage.Store(given).local
            path = Path(given) if local else storage.local_copy(given)
        except (ValueError, OSError) as exc:
            raise UsageError(str(exc)) from None
        if path.is_dir():
            images = find_image_files(path)
            found += images
            if not local:
                shown |= {str(p): f"{given.rstrip('/')}/{p.relative_to(path).as_posix()}"
                          for p in images}
        elif path.exists():
            found.append(path)
        else:
            raise UsageError(f"{path} does not exist.")
    return list(dict.fromkeys(found)), shown


class Progress:
    """A bar redrawn in place on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, total: int, stream=sys.stderr, every: float = 5.0):
        self.total, self.stream, self.every = total, stream, every
        self.tty = stream.isatty()
        self.start = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        rate = done / max(now - self.start, 1e-9)
        if self.tty:
            filled = int(30 * done / max(self.total, 1))
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} "
                              f"{rate:.1f} images/s")
            if done == self.total:
                self.stream.write("\n")
        elif now - self.last >= self.every or done == self.total:
            self.stream.write(f"{done}/{self.total} images, {rate:.1f} images/s\n")
            self.last = now
        self.stream.flush()


def _load(path: Path, predictor, max_pixels: int, exact: bool):
    """(model input, None) or (None, why the file cannot be used)."""
    try:
        image = open_checked(path.read_bytes(), max_pixels,  # as the server does
                             min_side=predictor.decode_side(exact))
        return predictor.prepare(image), None
    except ImageError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or exc}"


def predict_files(predictor, files: list[Path], threshold: float | None,
                  max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, workers: int | None = None,
                  on_progress=None, exact: bool = False, version: str | None = None):
    """Yield one result dict per file, in order: path, error (why it could not be read, or
    None), label, confidence, probabilities (every class, in vocab order), with a `threshold`
    unsure, and with a `version` the model's (as the server's answers name it). Decoding runs
    `workers` files at a time (at full size with `exact`, as the server does with
    EXACT_DECODE)."""
    workers = workers or min(4, os.cpu_count() or 1)
    done = 0
    with ThreadPoolExecutor(workers) as pool:  # Pillow decodes with the GIL released
        for start in range(0, len(files), BATCH):
            chunk = files[start:start + BATCH]
            loaded = list(pool.map(lambda p: _load(p, predictor, max_pixels, exact), chunk))
            good = [item for item, _ in loaded if item is not None]
            predictions = iter(predictor.predict_prepared(good))
            for path, (item, error) in zip(chunk, loaded):
                row = {"path": str(path), "error": error}
                if item is not None:
                    p = next(predictions)
                    row.update(label=p.label, confidence=p.confidence,
                               probabilities=p.probabilities)
                    if threshold is not None:
                        row["unsure"] = p.confidence < threshold
                    if version is not None:
                        row["version"] = version
                yield row
            done += len(chunk)
            if on_progress:
                on_progress(done)


def write_rows(rows, out, fmt: str, vocab: list[str], threshold: float | None) -> None:
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row) + "\n")
        return
    columns = (["path", "label", "confidence"] + (["unsure"] if threshold is not None else [])
               + ["version"])
    writer = csv.writer(out)
    writer.writerow(columns + vocab + ["error"])
    for row in rows:
        probs = row.get("probabilities") or {}
        writer.writerow([row.get(c, "") for c in columns]
                        + [probs.get(label, "") for label in vocab] + [row["error"] or ""])


def _output_format(out: Path | None) -> str:
    if out is None or out.suffix.lower() == ".csv":
        return "csv"
    if out.suffix.lower() == ".jsonl":
        return "jsonl"
    raise UsageError(f"--out {out}: name it .csv or .jsonl.")


def main(argv=None) -> int:
    parser = _Parser(prog="python -m classifier.predict",
                     description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="an exported learner (export.pkl)")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="image files or folders (searched recursively), or "
                        "s3://BUCKET/PREFIX")
    parser.add_argument("--out", type=Path, help="results.csv or results.jsonl "
                        "(default: CSV on stdout)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                        help="refuse larger images, as the server does (default %(default)s)")
    parser.add_argument("--exact-decode", action="store_true",
                        help="decode every image at full size, as the server does with "
                        "EXACT_DECODE=on (default: at the size the model needs)")
    args = parser.parse_args(argv)
    try:
        fmt = _output_format(args.out)
        if args.out is not None and args.out.is_dir():
            raise UsageError(f"--out {args.out} is a folder; name a file.")
        files, shown = find_images(args.paths)
        if not files:
            raise UsageError(f"No images found in {', '.join(map(str, args.paths))}.")
        from classifier.loader import load_model
        try:  # models/export.pkl beside a models/live.json: the live version, as served
            model_path = served_model_path(args.model)
            predictor, card = load_model(model_path, args.runtime, keep_torch_model=False,
                                         option="--runtime")
        except (ModelLoadError, VersionError) as exc:
            raise UsageError(str(exc)) from None
        threshold = card.threshold
        version = served_version(model_path, card.sha256)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    progress = Progress(len(files))
    failed = []

    def tracked(rows):
        for row in rows:
            row["path"] = shown.get(row["path"], row["path"])  # a bucket's object, not its copy
            if row["error"]:
                failed.append(row)
            yield row

    rows = tracked(predict_files(predictor, files, threshold, args.max_pixels,
                                 on_progress=progress.update, exact=args.exact_decode,
                                 version=version))
    if args.out is None:
        write_rows(rows, sys.stdout, fmt, predictor.vocab, threshold)
    else:
        with atomic_path(args.out) as tmp, open(tmp, "w", newline="") as fh:
            write_rows(rows, fh, fmt, predictor.vocab, threshold)
    for row in failed:
        print(f"unreadable {row['path']}: {row['error']}", file=sys.stderr)
    print(f"{len(files) - len(failed)} of {len(files)} images classified"
          + (f", results in {args.out}" if args.out else "") + ".", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
