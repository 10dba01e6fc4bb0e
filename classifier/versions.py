"""Model versions on disk, and the pointer that names the one served.

    models/versions/<name>/   one whole training run: export.pkl, export.json (with the sha256
                              of every file of the version), export.onnx + export.onnx.json,
                              report/, examples/. Written once, never changed afterwards.
    models/live.json          {"version": <name>, "previous": <name or null>, "at": <time>}
    models/history.jsonl      one line per move of the pointer (promote, rollback), appended

A version's name is the UTC time it was made and a short digest of its model,
`20261205-091500-ab12cd`: readable, and sorted by name is sorted by age. A models/ folder
with no live.json serves models/export.pkl as before (a notebook export dropped in, or the
layout of earlier releases), so nothing here is needed to serve one model.

This module knows paths and the pointer only (no torch, no Flask): training writes versions,
training.promote / training.rollback move the pointer, the server follows it. The same layout
may live in a bucket, `s3://BUCKET/PREFIX` (MODELS_URL, classifier/model_bucket.py): there a
version is complete once its export.json is there (pushed last), live.json is one PUT and
each history line an object of its own (a bucket cannot append).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

from classifier.model_files import sha256_file
from classifier.storage import Store, scheme_of

VERSIONS = "versions"
POINTER = "live.json"
HISTORY = "history.jsonl"
MODEL_FILE = "export.pkl"
NAME = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")


class VersionError(ValueError):
    """A version name or pointer that cannot be used; the message says which and why."""


def models_root(model_path: str | os.PathLike) -> Path:
    """The models/ folder for MODEL_PATH (models/export.pkl -> models/)."""
    return Path(model_path).parent


def version_name(made_at: dt.datetime, model_sha256: str) -> str:
    """`YYYYMMDD-HHMMSS-<6 hex>` for a model made at `made_at` (UTC) with that sha256."""
    return f"{made_at.astimezone(dt.UTC):%Y%m%d-%H%M%S}-{model_sha256[:6]}"


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise VersionError(f"{name!r} is not a version name (like 20261205-091500-ab12cd).")
    return name


def version_dir(root: Path, name: str) -> Path:
    return root / VERSIONS / check_name(name)


def in_bucket(root: str | os.PathLike) -> bool:
    return scheme_of(root) == "s3"


def list_versions(root: Path | str) -> list[str]:
    """Every complete version under root/versions/, oldest first (a version is complete once
    its export.pkl is there: training renames the whole folder into place last; in a bucket
    once its export.json is: push uploads it last)."""
    if in_bucket(root):
        parts = (name.split("/") for name in Store(root).files(VERSIONS))
        return sorted({p[1] for p in parts if len(p) == 3 and p[2] == "export.json"
                       and NAME.match(p[1])})
    folder = root / VERSIONS
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if NAME.match(p.name) and (p / MODEL_FILE).is_file())


def read_pointer(root: Path | str) -> dict | None:
    """live.json as a dict, or None when this models/ folder has no versions in use."""
    path = f"{root}/{POINTER}"
    try:
        raw = Store(root).read_bytes(POINTER) if in_bucket(root) \
            else Path(root, POINTER).read_bytes()
        return parse_pointer(raw, path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VersionError(f"{path} cannot be read ({type(exc).__name__}).") from None


def parse_pointer(raw: bytes, path: str) -> dict:
    """The pointer in live.json's bytes `raw`; VersionError naming `path` if it is not one."""
    try:
        pointer = json.loads(raw)
    except ValueError as exc:
        raise VersionError(f"{path} cannot be read ({type(exc).__name__}).") from None
    if not isinstance(pointer, dict) or not NAME.match(str(pointer.get("version", ""))):
        raise VersionError(f"{path} does not name a version.")
    return pointer


def live_version(root: Path) -> str | None:
    pointer = read_pointer(root)
    return pointer["version"] if pointer else None


def served_model_path(model_path: str | os.PathLike) -> Path:
    """The export.pkl to serve for MODEL_PATH: the live version's when models/live.json exists,
    else MODEL_PATH itself."""
    model_path = Path(model_path)
    live = live_version(models_root(model_path))
    return model_path if live is None else version_dir(models_root(model_path), live) / MODEL_FILE


def served_version(model_path: str | os.PathLike, model_sha256: str) -> str:
    """What answers name as the model that gave them: the version's name for a model under
    versions/<name>/, else (a bare export.pkl) the first 12 hex of its sha256."""
    folder = Path(model_path).parent
    if folder.parent.name == VERSIONS and NAME.match(folder.name):
        return folder.name
    return model_sha256[:12]


def pointer_root(model_path: str | os.PathLike) -> Path:
    """The models/ folder whose live.json a server of `model_path` follows: MODEL_PATH's own
    folder, or, where MODEL_PATH was already resolved to a version's export.pkl, the folder
    above versions/."""
    folder = Path(model_path).parent
    if folder.parent.name == VERSIONS and NAME.match(folder.name):
        return folder.parent.parent
    return folder


def check_files(model_path: str | os.PathLike, *, unused: tuple[str, ...] = ()) -> None:
    """Refuse (VersionError) a version whose files differ from the sha256 its export.json lists
    for each (`files`). Without that list (a notebook export, older layouts) nothing is checked
    here: the loader checks export.pkl against export.json's `sha256`. A file named in
    `unused` may be absent (the lean image drops export.pkl and serves the compiled graph,
    which records the sha256 of the export.pkl it was compiled from)."""
    folder = Path(model_path).parent
    try:
        listed = json.loads((folder / "export.json").read_text()).get("files") or {}
    except FileNotFoundError:
        return
    except (OSError, ValueError, AttributeError) as exc:
        raise VersionError(f"{folder / 'export.json'} cannot be read ({type(exc).__name__}).") from None
    for name, digest in listed.items():
        path = folder / name
        if not path.is_file():
            if name in unused:
                continue
            raise VersionError(f"{path} is listed in export.json but missing.")
        actual = sha256_file(path)
        if actual != digest:
            raise VersionError(f"{path} does not match export.json (sha256 {actual[:12]}... != "
                               f"{str(digest)[:12]}...): the file was replaced or corrupted.")


def move_pointer(root: Path | str, version: str, action: str, **details) -> dict:
    """Point live.json at `version` (atomically: a renamed file, or one PUT in a bucket) and
    append the move to history.jsonl."""
    if version not in list_versions(root):
        raise VersionError(f"No complete version {version!r} under {root}/{VERSIONS}.")
    previous = live_version(root)
    at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    pointer = {"version": version, "previous": previous, "at": at}
    store = Store(root)
    store.write_bytes(POINTER, (json.dumps(pointer, indent=2) + "\n").encode())
    record = {"at": at, "action": action, "version": version, "previous": previous, **details}
    store.append_line(HISTORY, (json.dumps(record, default=str) + "\n").encode())
    return pointer


def read_history(root: Path) -> list[dict]:
    """Every move of the pointer, oldest first."""
    try:
        lines = (root / HISTORY).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]
