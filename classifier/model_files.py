"""The model on disk: export.pkl, its export.json sidecar, checksums, atomic writes.

Shared by training (which writes them) and serving (which refuses to start on
a file that is missing, corrupt, not an image classifier, or not the file its
metadata describes).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import tempfile
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The model cannot be served; the message is one line meant for a person."""


class MissingNotebookFunction(ModelLoadError):
    """The model called a function that only existed in the notebook that exported it."""


class NotebookPlaceholder:
    """Stands in for a function the exporting notebook defined (in its `__main__`).

    A DataBlock's get_items/get_x/get_y (the fastai book's `is_cat`) are pickled by
    name, so loading fails in any other process with "Can't get attribute 'is_cat' on
    <module '__main__'>". Inference never calls them, so a placeholder lets the model
    load; calling one raises MissingNotebookFunction, which says how to provide it.
    """

    def __init__(self, name: str):
        self.__name__ = self.__qualname__ = name
        self.__module__ = "__main__"

    def __call__(self, *args, **kwargs):
        raise MissingNotebookFunction(
            f"The model calls {self.__name__}(), a function defined in the notebook that "
            f"exported it, which this process does not have. Export the model again "
            f"with fastai's default learn.export() (cloudpickle stores notebook functions "
            f"with the model), or define {self.__name__} in __main__ before loading it.")

    def __repr__(self) -> str:
        return f"<placeholder for __main__.{self.__name__}>"


class _PlaceholderUnpickler(pickle.Unpickler):
    """An Unpickler that loads unknown `__main__` names as NotebookPlaceholders."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.placeholders: dict[str, NotebookPlaceholder] = {}

    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except AttributeError:
            if module != "__main__" or not name.isidentifier():
                raise
            found = self.placeholders.get(name)
            if found is None:
                found = self.placeholders[name] = NotebookPlaceholder(name)
            return found


class _PlaceholderPickle:
    """The `pickle_module` handed to torch.load: pickle, with the Unpickler above.

    torch.load subclasses `pickle_module.Unpickler`, so the names its unpickler
    replaced are collected in `placeholders` through this class.
    """

    __name__ = "pickle"
    placeholders: set[str]

    def __init__(self):
        self.placeholders = set()
        outer = self

        class Unpickler(_PlaceholderUnpickler):
            def load(self):
                try:
                    return super().load()
                finally:
                    outer.placeholders.update(self.placeholders)

        self.Unpickler = Unpickler

    def load(self, file, **kwargs):
        return self.Unpickler(file, **kwargs).load()

    def __getattr__(self, name):
        return getattr(pickle, name)


def metadata_path(model_path: str | os.PathLike) -> Path:
    """export.pkl -> export.json, beside it."""
    return Path(model_path).with_suffix(".json")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike):
    """Yield a temporary path beside `final`; rename it over `final` only on success.

    A crash, an exception or Ctrl-C leaves `final` as it was (old model or none),
    never half-written, because rename within one directory is atomic.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # The pid in the name lets a later run tell a dead process's leftover from a live one's.
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result must be readable like any file
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_metadata(model_path: str | os.PathLike) -> dict | None:
    """The export.json beside a model, or None when there is none (a notebook export)."""
    path = metadata_path(model_path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc}); fix or delete it.") from None


def load_learner_checked(model_path: str | os.PathLike, verify_checksum: bool = True):
    """Load a fastai image-classifier export, or raise ModelLoadError saying why not.

    Returns (learner, metadata-or-None). Only load files you trust: a .pkl is
    a pickle and can run code, which is why the checksum in export.json is
    checked before unpickling.
    """
    path = Path(model_path)
    if not path.is_file():
        raise ModelLoadError(f"Model file not found: {path}. Train one with "
                             "`python -m training.train DATA_DIR` or set MODEL_PATH.")
    metadata = read_metadata(path)
    if verify_checksum and metadata and metadata.get("sha256"):
        actual = sha256_file(path)
        if actual != metadata["sha256"]:
            raise ModelLoadError(
                f"{path} does not match {metadata_path(path)} (sha256 {actual[:12]}... "
                f"!= {metadata['sha256'][:12]}...): the model file was replaced or corrupted. "
                "Re-export it, or remove the stale export.json.")
    pickle_module = _PlaceholderPickle()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from fastai.learner import load_learner
            learner = load_learner(path, cpu=True, pickle_module=pickle_module)
    except MissingNotebookFunction as exc:  # a notebook function called while unpickling
        raise ModelLoadError(f"{path}: {exc}") from None
    except Exception as exc:  # unpickling untrusted/corrupt data can raise anything
        reason = " ".join(str(exc).split())[:200]  # one line, whatever pickle said
        raise ModelLoadError(f"{path} is not a loadable fastai export: "
                             f"{type(exc).__name__}: {reason}") from None
    if pickle_module.placeholders:
        log.warning("%s refers to %s, defined in the notebook that exported it; loaded as "
                    "placeholders (inference does not call them)", path,
                    ", ".join(sorted(pickle_module.placeholders)))
    check_image_classifier(learner, path)
    return learner, metadata


def check_image_classifier(learner, path) -> None:
    from fastai.learner import Learner

    if not isinstance(learner, Learner):
        raise ModelLoadError(f"{path} holds a {type(learner).__name__}, not a fastai Learner.")
    dls = getattr(learner, "dls", None)
    vocab = getattr(dls, "vocab", None)
    x_pipeline = (getattr(dls, "tfms", None) or [None])[0]
    # ImageBlock puts PILImage.create (named "PILBase.create") in the input pipeline.
    takes_images = any(getattr(f, "name", "").startswith("PIL")
                       for f in getattr(x_pipeline, "fs", []))
    if vocab is None or len(vocab) < 2 or not takes_images:
        raise ModelLoadError(f"{path} is a fastai Learner but not an image classifier "
                             "(it needs an ImageBlock input and a CategoryBlock vocab).")
