"""Find, verify and split the user's images, and build the fastai DataLoaders.

Two layouts (the two that fastai's and Keras's tutorials use):
  (a) DATA_DIR/<label>/<image>              random split: --valid-pct, --seed
  (b) DATA_DIR/train/<label>/<image>        used as given, with valid/ (or validation/)
      DATA_DIR/valid/<label>/<image>        and an optional test/ scored once, at the end
      (a train/ without valid/ is split at random like layout (a))

`--extra DIR` adds DIR/<label>/<image> (the web app's FEEDBACK_DIR of corrections) to the
training split only; see find_extra.

Every file is opened and fully decoded first (classifier.images.verify_image_file;
the training command keeps each decode for its epochs: training_loader, DecodeCache);
corrupt, truncated, empty and non-image files are skipped and listed with the
reason. Nothing under DATA_DIR is ever written, moved or deleted. Hidden files
and folders (a leading dot: .DS_Store, .ipynb_checkpoints) are ignored.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from classifier.image_files import find_image_files
from classifier.images import DECODE_MARGIN, RESIZE_ONLY_MARGIN, RGBLoader, verify_image_file
from training import UsageError

SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "validation"), "test": ("test",)}


@dataclass
class Dataset:
    root: Path
    layout: str  # "folders" (random split) or "splits" (train/valid[/test] folders)
    vocab: list[str]
    train: list[Path]
    valid: list[Path]
    test: list[Path] = field(default_factory=list)
    extra: list[Path] = field(default_factory=list)  # more training images, from --extra
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for split in ("train", "extra", "valid", "test"):
            items = getattr(self, split)
            if items or split in ("train", "valid"):
                per_class = Counter(label_of(p) for p in items)
                out[split] = {label: per_class.get(label, 0) for label in self.vocab}
        return out

    def summary(self) -> dict:
        return {"root": str(self.root.resolve()), "layout": self.layout, "classes": self.vocab,
                "counts": self.counts(),
                "images": {split: len(getattr(self, split)) for split in ("train", "extra", "valid", "test")},
                "skipped": self.skipped}


def label_of(path: Path) -> str:
    """The class of an image: the folder directly containing it (fastai's parent_label)."""
    return path.parent.name


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _hidden(p))


def _candidates(folder: Path, skipped: list[dict]) -> list[Path]:
    """Files of a split folder laid out as <label>/<file>; anything else is listed as skipped."""
    found = []
    for path in find_image_files(folder, every_file=True):
        depth = len(path.relative_to(folder).parts)
        if depth == 2:
            found.append(path)
        elif depth == 1:
            skipped.append({"path": str(path), "reason": "not inside a class folder"})
        else:
            label = path.relative_to(folder).parts[0]
            skipped.append({"path": str(path), "reason":
                            f"inside a sub-folder of class '{label}' (images must "
                            "sit directly in their class folder)"})
    return found


def _verified(paths: list[Path], skipped: list[dict], loader: RGBLoader | None = None) -> list[Path]:
    """The files that decode; with a `loader` that has a DecodeCache, each one's decode (as
    the loader decodes it) is kept there, so the first epoch decodes none of them again."""
    def verify(path: Path) -> str | None:
        if loader is None or loader.cache is None:
            return verify_image_file(path)
        return verify_image_file(path, loader.min_side,
                                 lambda stat, im: loader.cache.keep(path, stat, im))

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        reasons = list(pool.map(verify, paths))
    good = []
    for path, reason in zip(paths, reasons):
        if reason is None:
            good.append(path)
        else:
            skipped.append({"path": str(path), "reason": reason})
    return good


def _require_dir(root) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"DATA_DIR {root} {'is not a directory' if root.exists() else 'does not exist'}.")
    return root


def _named(root: Path, split: str) -> Path | None:
    present = [root / n for n in SPLIT_NAMES[split] if (root / n).is_dir()]
    if len(present) > 1:
        raise UsageError(f"{root} has both {present[0].name}/ and {present[1].name}/; keep one.")
    return present[0] if present else None


def random_split(items: list[Path], valid_pct: float, seed: int) -> tuple[list[Path], list[Path]]:
    """fastai's RandomSplitter(valid_pct, seed), then every class keeps one training image."""
    from fastai.data.transforms import RandomSplitter

    train_idx, valid_idx = RandomSplitter(valid_pct=valid_pct, seed=seed)(items)
    train = [items[i] for i in train_idx]
    valid = [items[i] for i in valid_idx]
    in_train = {label_of(p) for p in train}
    for path in list(valid):
        if label_of(path) not in in_train:
            valid.remove(path)
            train.append(path)
            in_train.add(label_of(path))
    return train, valid


def find_dataset(root: str | os.PathLike, valid_pct: float = 0.2, seed: int = 42,
                 extra: str | os.PathLike | None = None, loader: RGBLoader | None = None) -> Dataset:
    """Scan and verify DATA_DIR; raise UsageError (one line) when it cannot be trained on.
    With `loader` (training_loader's), the training and validation images' decodes are kept
    in its cache as they are verified (a test/ folder's are not; a test split drawn later from
    the training images is dropped again with DecodeCache.retain)."""
    root = _require_dir(root)
    skipped: list[dict] = []
    train_dir = _named(root, "train")
    if train_dir is None:
        layout, valid_dir, test_dir = "folders", None, None
        train_dir = root
    else:
        layout, valid_dir, test_dir = "splits", _named(root, "valid"), _named(root, "test")
        for other in _subdirs(root):
            if other not in (train_dir, valid_dir, test_dir):
                skipped.append({"path": str(other), "reason": "not a train/valid/test folder"})

    train = _verified(_candidates(train_dir, skipped), skipped, loader)
    vocab = sorted({label_of(p) for p in train} | {d.name for d in _subdirs(train_dir)})
    if len(vocab) < 2:
        raise UsageError(f"{train_dir} needs at least 2 class folders (<label>/<image>); "
                         f"found {len(vocab)}{': ' + vocab[0] if vocab else ''}.")
    valid = _verified(_candidates(valid_dir, skipped), skipped, loader) if valid_dir else []
    test = _verified(_candidates(test_dir, skipped), skipped) if test_dir else []

    per_class = Counter(label_of(p) for p in train + valid)
    for label in vocab:
        if per_class[label] < 2:
            raise UsageError(f"Class '{label}' has {per_class[label]} usable image(s); "
                             "every class needs at least 2.")
    for name, items in (("validation", valid), ("test", test)):
        unknown = sorted({label_of(p) for p in items} - set(vocab))
        if unknown:
            raise UsageError(f"The {name} split has classes with no training folder: "
                             f"{', '.join(unknown)}.")
    missing = [label for label in vocab if not any(label_of(p) == label for p in train)]
    if missing and valid_dir:
        raise UsageError(f"Class(es) {', '.join(missing)} have no usable training images "
                         f"in {train_dir}.")

    if valid_dir is None:
        train, valid = random_split(train, valid_pct, seed)
    if not train:
        raise UsageError(f"The training split of {root} is empty.")
    if not valid:
        where = f"{valid_dir} has no usable images" if valid_dir else \
            f"{len(train)} images x --valid-pct {valid_pct} leaves no validation images"
        raise UsageError(f"The validation split is empty: {where}.")
    if test_dir and not test:
        raise UsageError(f"The test split is empty: {test_dir} has no usable images.")
    extras = find_extra(Path(extra), vocab, valid + test, skipped) if extra else []
    return Dataset(root=root, layout=layout, vocab=vocab, train=train, valid=valid,
                   test=test, extra=extras, skipped=skipped)


def find_extra(folder: Path, vocab: list[str], held_out: list[Path], skipped: list[dict]) -> list[Path]:
    """Verified images of --extra DIR/<label>/<image>, for the training split only. Loose files
    there (the web app's feedback.jsonl) are ignored. An image with the same bytes as a
    validation or test image is skipped: a corrected validation example must not leak into
    training and inflate the validation score."""
    unknown = sorted(d.name for d in _subdirs(folder) if d.name not in vocab)
    if unknown:
        raise UsageError(f"--extra {folder} has class folder(s) the data does not have: "
                         f"{', '.join(unknown)} (the classes are {', '.join(vocab)}).")
    found: list[dict] = []
    paths = _candidates(folder, found)
    skipped += [f for f in found if Path(f["path"]).parent != folder]  # loose files: ignored
    held_out_hashes = {content_hash(p) for p in held_out}
    kept = []
    for path in _verified(paths, skipped):
        if content_hash(path) in held_out_hashes:
            skipped.append({"path": str(path), "reason": "the same image is in the validation "
                            "or test split; not used for training"})
        else:
            kept.append(path)
    return kept


def content_hash(path: Path) -> str:
    """sha256 of the file's bytes: the same image under any name."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def item_transforms(size: int, augment: bool):
    """fastai's tutorial recipe: RandomResizedCrop + aug_transforms when augmenting, else Resize."""
    from fastai.vision.augment import RandomResizedCrop, Resize, aug_transforms

    if augment:
        return RandomResizedCrop(size, min_scale=0.5), aug_transforms()
    return Resize(size), []


DECODE_CACHE_BYTES = 2 << 30  # 2 GiB: about 10,000 photos at 224 px (4:3, 200 KB each)


class DecodeCache:
    """Each file's decoded RGB image, exactly as RGBLoader decodes it (the pixels serving
    sees), kept after its first decode so later epochs decode nothing: a 12 MP JPEG's reduced
    decode costs tens of milliseconds an epoch, the resnet18 step on it a few. Keyed by path,
    mtime and size, so a file replaced during the run is decoded again. Bounded by
    `max_bytes`: the images that do not fit are decoded every epoch (keeping the first ones,
    not evicting: epochs read every file in turn, and evicting in that order would keep none).
    Nothing is resized here: a second resize would make validation see other pixels than
    serving does."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes, self.used = DECODE_CACHE_BYTES if max_bytes is None else max_bytes, 0
        self.images: dict[tuple, Image.Image] = {}
        self._lock = threading.Lock()

    def image(self, path: Path, decode) -> Image.Image:
        stat = path.stat()
        cached = self.images.get(self._key(path, stat))
        if cached is not None:
            return cached
        im = decode(path)
        self.keep(path, stat, im)
        return im

    def keep(self, path: Path, stat: os.stat_result, im: Image.Image) -> None:
        """Keep `im`, decoded from `path` as it was when `stat` was taken, if there is room."""
        key, size = self._key(path, stat), self._bytes(im)
        with self._lock:
            if key not in self.images and self.used + size <= self.max_bytes:
                self.images[key], self.used = im, self.used + size

    def retain(self, paths) -> None:
        """Drop every image but those of `paths`: the check decoded the whole folder, and the
        test set's photos (scored by the exported model's own decoding) would take room that
        training images then miss, each decoded again every epoch."""
        wanted = {str(path) for path in paths}
        with self._lock:
            for key in [key for key in self.images if key[0] not in wanted]:
                self.used -= self._bytes(self.images.pop(key))

    @staticmethod
    def _key(path: Path, stat: os.stat_result) -> tuple:
        return str(path), stat.st_mtime_ns, stat.st_size

    @staticmethod
    def _bytes(im: Image.Image) -> int:
        return im.width * im.height * len(im.getbands())

    def fill(self, paths: list[Path], decode, threads: int | None = None) -> None:
        """Decode `paths` into the cache on a thread per core (up to 8) before the first epoch,
        which would decode them one at a time (Pillow lets go of the GIL while it decodes: 200
        phone photos took 4.4 s of the first epoch). Stops once the cache is full; a file that
        fails here is left for the epoch to decode, and to report, as it would have without."""
        def one(path: Path) -> None:
            if self.used < self.max_bytes:
                with contextlib.suppress(Exception):
                    self.image(path, decode)

        with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
            list(pool.map(one, paths))


def training_loader(size: int, augment: bool, exact_decode: bool = False,
                    num_workers: int = 0) -> RGBLoader:
    """The DataBlock's get_x (see dataloaders), with an empty DecodeCache where it keeps one."""
    loader = RGBLoader(size, exact_decode, DECODE_MARGIN if augment else RESIZE_ONLY_MARGIN)
    if not exact_decode and num_workers == 0:
        loader.cache = DecodeCache()
    return loader


def dataloaders(ds: Dataset, size: int, bs: int, augment: bool, num_workers: int = 0,
                exact_decode: bool = False, prefill: bool = True, loader: RGBLoader | None = None):
    """The DataBlock of every model we train: get_x is classifier.images.RGBLoader(size),
    which decodes each photo no larger than twice `size` (augmentation's crops need the
    pixels; once `size` without augmentation), exactly as serving then does for the export
    (in full with `exact_decode`, as serving does with EXACT_DECODE). Decoded photos are cached
    (DecodeCache) as decoded, all of them here on a thread per core with `prefill` (one of
    several training processes reads only its share: it decodes as its epochs go); not with
    `exact_decode`, which asks for a full decode every time, nor in worker processes, whose
    copies would not last. `loader`: training_loader's, as find_dataset filled its cache."""
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import IndexSplitter, parent_label
    from fastai.vision.data import ImageBlock

    item_tfms, batch_tfms = item_transforms(size, augment)
    training = list(ds.train) + list(ds.extra)
    items = training + list(ds.valid)
    loader = loader or training_loader(size, augment, exact_decode, num_workers)
    if loader.cache is not None and prefill:
        loader.cache.fill(items, loader.decode)  # what find_dataset did not keep
    block = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=ds.vocab)),
                      get_x=loader, get_y=parent_label,
                      splitter=IndexSplitter(range(len(training), len(items))),
                      item_tfms=item_tfms, batch_tfms=batch_tfms)
    return block.dataloaders(items, bs=bs, num_workers=num_workers)


def find_labelled(root: str | os.PathLike) -> tuple[list[Path], list[dict]]:
    """Verified images of a labelled folder to score: <label>/<image>, or test/ (else valid/)."""
    root = _require_dir(root)
    folder = root
    if _named(root, "train") is not None:
        folder = _named(root, "test") or _named(root, "valid") or root
    skipped: list[dict] = []
    paths = _verified(_candidates(folder, skipped), skipped)
    if not paths:
        raise UsageError(f"{folder} has no usable images in <label>/<image> folders.")
    return paths, skipped
