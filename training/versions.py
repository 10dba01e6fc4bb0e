"""List the model versions of a models folder: date, data, scores, and which one is live.

    python -m training.versions [--models models]
    python -m training.versions --models models --push VERSION s3://BUCKET/PREFIX

--push uploads a version (and the frozen test set) to the bucket that servers follow with
MODELS_URL; `training.promote VERSION --models s3://...` then puts it live on all of them.

The layout and the pointer are classifier/versions.py's; the versions are what
`python -m training.train` writes. `training.compare`, `training.promote` and
`training.rollback` take the names listed here (or `live`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from classifier import versions
from training import OneLineParser, UsageError

DEFAULT_MODELS = "models"


def models_parser(prog: str, doc: str) -> OneLineParser:
    """A parser with --models, shared by the versions commands."""
    parser = OneLineParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("--models", type=models_location, default=Path(DEFAULT_MODELS),
                        help=f"the models folder (default {DEFAULT_MODELS}; the folder of "
                        "MODEL_PATH), or s3://BUCKET/PREFIX (MODELS_URL)")
    return parser


def models_location(text: str) -> Path | str:
    """--models: a folder (a Path) or a bucket's URL (kept as text: a Path would mangle it)."""
    from classifier.storage import check_location

    try:
        check_location(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.rstrip("/") if versions.in_bucket(text) else Path(text)


def resolve(root: Path, name: str) -> str:
    """A complete version's name; `live` names the one served. UsageError when there is none."""
    try:
        if name == "live":
            live = versions.live_version(root)
            if live is None:
                raise UsageError(f"{root} has no live version (no {versions.POINTER}).")
            return live
        versions.check_name(name)
    except versions.VersionError as exc:
        raise UsageError(str(exc)) from None
    if name not in versions.list_versions(root):
        raise UsageError(f"No complete version {name!r} under {root}/{versions.VERSIONS} "
                         "(python -m training.versions lists them).")
    return name


def publish(root: Path, name: str, test: list[Path], out: Path) -> None:
    """After training: the first version of a models folder freezes its test images and goes
    live (so `make serve` after `make train` serves it); a later one waits for
    `training.promote`, and we say how."""
    from training import test_set

    test_set.record(root, test, name)
    live = versions.live_version(root)
    if live is None:
        versions.move_pointer(root, name, "first version")
        print(f"live: {name} is the first version in {root}, so {out} serves it")
        return
    print(f"not live: {live} still serves. Compare, then promote if it is not worse:\n"
          f"  python -m training.compare {live} {name} --models {root}\n"
          f"  python -m training.promote {name} --models {root}")


def describe(root: Path, name: str) -> dict:
    """One row of the listing, from the version's export.json."""
    from classifier.model_files import ModelLoadError, read_metadata
    from classifier.storage import Store

    try:
        meta = json.loads(Store(root).read_bytes(f"{versions.VERSIONS}/{name}/export.json")) \
            if versions.in_bucket(root) else \
            read_metadata(versions.version_dir(root, name) / versions.MODEL_FILE) or {}
    except (ModelLoadError, ValueError):
        meta = {}
    metrics, images = meta.get("metrics", {}), meta.get("dataset", {}).get("images", {})
    score = {split: f"{metrics[split]['accuracy']:.4f}" if split in metrics else "-"
             for split in ("validation", "test")}
    data = meta.get("dataset", {}).get("root", "?")
    if images.get("extra"):
        data += f" + {images['extra']} extra"
    return {"version": name, "date": meta.get("created_at", "?"),
            "data": f"{data} ({images.get('train', '?')} train)", **score,
            "onnx": "yes" if meta.get("onnx", {}).get("compiled") else "no"}


def push(root: Path, name: str, url: str) -> int:
    """--push: upload a version, or say why not (exit 2 bad input, 1 the bucket away)."""
    from classifier.model_bucket import push as upload

    try:
        name = resolve(root, name)
        sent = upload(root, name, models_location(url))
    except (UsageError, versions.VersionError, argparse.ArgumentTypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"pushed {name} to {url} ({sent} files); python -m training.promote {name} "
          f"--models {url} puts it live on every server that follows it")
    return 0


def main(argv=None) -> int:
    parser = models_parser("python -m training.versions", __doc__)
    parser.add_argument("--push", nargs=2, metavar=("VERSION", "URL"),
                        help="upload VERSION of --models to the bucket URL (s3://BUCKET/PREFIX)")
    args = parser.parse_args(argv)
    if args.push:
        return push(args.models, *args.push)
    try:
        names = versions.list_versions(args.models)
        live = versions.live_version(args.models)
    except versions.VersionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not names:
        print(f"no versions in {args.models} (python -m training.train writes them)")
        return 0
    rows = [describe(args.models, name) for name in names]
    columns = ["version", "date", "validation", "test", "onnx", "data"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    print(("  " + "  ".join(f"{c:<{widths[c]}}" for c in columns)).rstrip())
    for row in rows:
        mark = "* " if row["version"] == live else "  "
        print(mark + "  ".join(f"{row[c]:<{widths[c]}}" for c in columns).rstrip())
    print(f"(* live; test: accuracy on the frozen test set, {args.models}/test_set.json)"
          if live else f"none live: {args.models}/export.pkl is served")
    return 0


if __name__ == "__main__":
    sys.exit(main())
