"""One way to reach a folder of files, on this machine's disk or in a bucket, so that
several servers can share what they write (corrections, model versions).

    store = Store("s3://bucket/feedback")   # or "/data/feedback", or "file:///data"
    store.write_bytes("cat/ab12.jpg", data)       # whole or not at all
    store.files()                                 # {"cat/ab12.jpg": 51234, ...}

A location is a local path, a file:// URL or an s3:// URL; any other scheme is refused
(ValueError), so a typo never becomes a local folder named "s3:". Buckets are reached
through fsspec's s3fs over S3's API (AWS S3, fly's Tigris, MinIO), with the credentials and
endpoint of the standard variables AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and
AWS_ENDPOINT_URL_S3 (`fly storage create` sets all four).

Writes are atomic: locally a temporary file renamed over the name, in a bucket one PUT
(S3 makes an object visible whole or not at all). A bucket has no append, so `append_line`
writes each line as an object of its own beside the log's name. Every failure to reach
the store is a StoreUnavailable (an OSError) whose message names the location; a missing
file stays FileNotFoundError.
"""
from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import functools
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path, PurePosixPath

SCHEMES = ("file", "s3")
# Seconds to connect and to wait for an answer, and tries per call: a store that stops
# answering costs a request a few seconds, not gunicorn's 60 s worker timeout.
CONNECT_TIMEOUT, READ_TIMEOUT, RETRIES = 3, 10, 2


class StoreUnavailable(OSError):
    """The store cannot be reached or refuses us; the message says which and why."""


def scheme_of(location: str | os.PathLike) -> str:
    """'s3', 'file' (a plain path too), or whatever else is written before '://'."""
    text = os.fspath(location)
    return text.split("://", 1)[0].lower() if "://" in text else "file"


def check_location(location: str | os.PathLike) -> str:
    """`location` if it names a place we can reach, else ValueError saying why."""
    text = os.fspath(location)
    scheme = scheme_of(text)
    if scheme not in SCHEMES or (":" in text.split("/", 1)[0] and "://" not in text):
        raise ValueError(f"{text!r} is neither a local path nor an s3:// or file:// URL.")
    if scheme == "s3" and not text[len("s3://"):].strip("/"):
        raise ValueError(f"{text!r} names no bucket (s3://BUCKET/PREFIX).")
    return text


def _s3_options() -> dict:
    """s3fs's options from the standard AWS variables (botocore reads the keys itself)."""
    client = {k: v for k, v in (("endpoint_url", os.environ.get("AWS_ENDPOINT_URL_S3")
                                 or os.environ.get("AWS_ENDPOINT_URL")),
                                ("region_name", os.environ.get("AWS_REGION"))) if v}
    return {"client_kwargs": client, "use_listings_cache": False,
            "config_kwargs": {"connect_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT,
                              "retries": {"max_attempts": 1}}}


class Store:
    """A folder, local or a prefix in a bucket; names inside it are relative POSIX paths."""

    def __init__(self, location: str | os.PathLike):
        self.url = check_location(location)
        self.local = scheme_of(self.url) == "file"
        self.root = str(Path(self.url.removeprefix("file://")).absolute()) if self.local \
            else self.url[len("s3://"):].rstrip("/")

    @functools.cached_property
    def fs(self):
        """fsspec's filesystem, made on first use: s3fs imports ssl, which a gevent worker
        must patch before anything imports it (so gunicorn's master never does)."""
        import fsspec
        if self.local:
            return fsspec.filesystem("file")
        fs = fsspec.filesystem("s3", **_s3_options())
        fs.retries = RETRIES  # s3fs's own tries (a class attribute, not an option)
        return fs

    def __str__(self) -> str:
        return self.url

    def path(self, name: str = "") -> str:
        """The full path of `name` in this store's filesystem."""
        return f"{self.root}/{name}" if name else self.root

    @contextlib.contextmanager
    def _reaching(self, what: str):
        """Errors of the filesystem as StoreUnavailable naming the store (not found stays)."""
        try:
            yield
        except FileNotFoundError:
            raise
        except Exception as exc:  # s3fs lets botocore's and aiohttp's own errors through
            raise StoreUnavailable(f"cannot {what} {self.url}: "
                                   f"{type(exc).__name__}: {exc}".strip()) from exc

    def read_bytes(self, name: str) -> bytes:
        with self._reaching("read from"):
            return self.fs.cat_file(self.path(name))

    def exists(self, name: str) -> bool:
        with self._reaching("look in"):
            return self.fs.exists(self.path(name))

    def write_bytes(self, name: str, data: bytes) -> None:
        """Store `data` as `name`: a reader sees the old object or the whole new one."""
        if self.local:
            from classifier.model_files import atomic_path
            with atomic_path(self.path(name)) as tmp:
                tmp.write_bytes(data)
            return
        with self._reaching("write to"):
            self.fs.pipe_file(self.path(name), data)

    def append_line(self, name: str, line: bytes) -> str:
        """Add one line to the log `name`; the name it went to. Locally one O_APPEND write
        (workers' lines never interleave); in a bucket, which cannot append, the line is an
        object of its own, `<stem>-<UTC time>-<random>.<suffix>` beside `name`."""
        if self.local:
            target = Path(self.path(name))
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            return name
        pure = PurePosixPath(name)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        part = str(pure.with_name(f"{pure.stem}-{stamp}-{uuid.uuid4().hex[:8]}{pure.suffix}"))
        self.write_bytes(part, line)
        return part

    def files(self, under: str = "") -> dict[str, int]:
        """{name: size} of every file below `under` (all of the store by default)."""
        with self._reaching("list"):
            if not self.fs.exists(self.path(under)):
                return {}
            found = self.fs.find(self.path(under), detail=True)
        start = len(self.root) + 1
        return {p[start:]: info.get("size") or 0 for p, info in found.items()
                if info.get("type") != "directory"}

    def check(self) -> None:
        """Raise StoreUnavailable unless the store answers and takes a write (start-up)."""
        probe = f".reachable-{uuid.uuid4().hex[:8]}"
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)
        try:
            self.write_bytes(probe, b"")
        except FileNotFoundError as exc:  # s3fs's word for a bucket that does not exist
            raise StoreUnavailable(f"cannot write to {self.url}: no such bucket or "
                                   f"folder ({exc})") from exc
        with self._reaching("remove a probe from"):
            self.fs.rm_file(self.path(probe))

    def download(self, under: str, dest: Path) -> None:
        """Copy every file below `under` to the folder `dest`, keeping the layout."""
        for name in self.files(under):
            target = dest / PurePosixPath(name).relative_to(under or ".")
            target.parent.mkdir(parents=True, exist_ok=True)
            with self._reaching("read from"):
                self.fs.get_file(self.path(name), str(target))


def local_copy(location: str | os.PathLike) -> Path:
    """A local folder holding what `location` holds, for readers of whole folders (training's
    --extra, the batch CLI): the folder itself, or for a bucket a temporary copy of its files
    that is removed when this process exits. StoreUnavailable if the bucket does not answer."""
    store = Store(location)
    if store.local:
        return Path(store.root)
    dest = Path(tempfile.mkdtemp(prefix="store-copy-"))
    atexit.register(shutil.rmtree, dest, ignore_errors=True)
    store.download("", dest)
    return dest


def main(argv=None) -> int:
    """`python -m classifier.storage check LOCATION`: can this machine write there? Exit 0
    if so, 1 with the reason if not, 2 for a location that is neither a path nor a URL we
    know. gunicorn's master runs it in a process of its own: the clients it imports (ssl)
    must not be loaded before a gevent worker patches them."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m classifier.storage",
                                     description=main.__doc__.split("\n")[0])
    parser.add_argument("command", choices=["check"])
    parser.add_argument("location", help="a folder, file:// or s3://BUCKET/PREFIX")
    args = parser.parse_args(argv)
    try:
        Store(args.location).check()
    except (ValueError, OSError) as exc:  # a location we do not know, a store away
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    print(f"ok: {args.location} takes writes.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
