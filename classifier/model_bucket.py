"""Model versions in a bucket (MODELS_URL), so that every server serves the one promoted there.

The bucket holds classifier/versions.py's layout: versions/<name>/..., live.json, history lines,
and the frozen test set that training.promote compares on. `push` uploads a version made on a
training machine, every file before its export.json, so a version half uploaded is never
complete. Each server keeps a local copy (MODEL_PATH's folder) that `pull` brings in line with
the bucket: one small GET of live.json, and when it names another version, that version's files
downloaded beside the others, checked against their sha256, renamed into place, then the local
live.json rewritten. The server's follower (app/model_follow.py) then swaps as on one machine.
"""
from __future__ import annotations

import contextlib
import fcntl
import shutil
import sys
import tempfile
from pathlib import Path

from classifier import versions
from classifier.storage import Store

EXPORT_JSON = "export.json"
TEST_SET, TEST_SET_FOLDER = "test_set.json", "test_set"


def push(root: Path, name: str, url: str) -> int:
    """Upload root's version `name` and its frozen test set to the bucket; files uploaded.
    Within each, the file that makes it complete (export.json, test_set.json) goes last."""
    store = Store(url)
    folder = versions.version_dir(root, name)
    if name not in versions.list_versions(root):
        raise versions.VersionError(f"No complete version {name!r} under {root}/{versions.VERSIONS}.")
    uploads = _files_last(folder, f"{versions.VERSIONS}/{name}", EXPORT_JSON)
    if (root / TEST_SET).is_file():
        uploads += _files_last(root / TEST_SET_FOLDER, TEST_SET_FOLDER, None)
        uploads.append((TEST_SET, root / TEST_SET))
    for key, path in uploads:
        store.write_bytes(key, path.read_bytes())
    return len(uploads)


def _files_last(folder: Path, prefix: str, last: str | None) -> list[tuple[str, Path]]:
    """(key, path) of every file below `folder`, the one named `last` at the end."""
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.name == last)
    return [(f"{prefix}/{p.relative_to(folder).as_posix()}", p) for p in files]


@contextlib.contextmanager
def _one_at_a_time(root: Path):
    """Processes pulling into the same folder (a server's workers) take turns."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".pull.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fetch_version(store: Store, name: str, root: Path) -> None:
    """Download the bucket's version `name` into root/versions/ unless it is there, checked
    (VersionError if incomplete or not matching its sha256s) and renamed into place whole."""
    final = versions.version_dir(root, name)
    if name in versions.list_versions(root):
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    part = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    try:
        store.download(f"{versions.VERSIONS}/{name}", part)
        if not (part / EXPORT_JSON).is_file():
            raise versions.VersionError(f"{store}/{versions.VERSIONS}/{name} is not complete "
                                        f"(no {EXPORT_JSON}; push uploads it last).")
        versions.check_files(part / versions.MODEL_FILE)
        part.rename(final)
    finally:
        shutil.rmtree(part, ignore_errors=True)


def pull(url: str, root: Path) -> bool:
    """Make root's live.json say what the bucket's says, fetching that version first; True if
    it changed. StoreUnavailable when the bucket does not answer, VersionError for a version
    that cannot be used: root keeps what it serves either way."""
    store = Store(url)
    try:
        raw = store.read_bytes(versions.POINTER)
    except FileNotFoundError:
        raise versions.VersionError(f"{url} has no {versions.POINTER} (python -m "
                                    "training.promote VERSION --models URL puts one)") from None
    local = root / versions.POINTER
    if local.is_file() and local.read_bytes() == raw:
        return False
    name = versions.parse_pointer(raw, f"{url}/{versions.POINTER}")["version"]
    with _one_at_a_time(root):
        fetch_version(store, name, root)
        Store(root).write_bytes(versions.POINTER, raw)
    return True


@contextlib.contextmanager
def local_models(root: Path | str, names: list[str]):
    """A local models folder holding `names` and the frozen test set: root itself, or for a
    bucket a temporary copy of just those (training.promote compares there)."""
    if not versions.in_bucket(root):
        yield root
        return
    store = Store(root)
    with tempfile.TemporaryDirectory(prefix="models-copy-") as tmp:
        for name in names:
            fetch_version(store, name, Path(tmp))
        store.download(TEST_SET_FOLDER, Path(tmp) / TEST_SET_FOLDER)
        if store.exists(TEST_SET):
            (Path(tmp) / TEST_SET).write_bytes(store.read_bytes(TEST_SET))
        yield Path(tmp)


def main(argv=None) -> int:
    """`python -m classifier.model_bucket pull URL FOLDER`: gunicorn's master brings the local
    copy in line before loading (in a process of its own: s3fs's ssl must not be imported
    before a gevent worker patches it). Exit 0 done, 1 with the reason if not."""
    if len(argv := sys.argv[1:] if argv is None else argv) != 3 or argv[0] != "pull":
        print("usage: python -m classifier.model_bucket pull URL FOLDER", file=sys.stderr)
        return 2
    try:
        pull(argv[1], Path(argv[2]))
    except (OSError, versions.VersionError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
