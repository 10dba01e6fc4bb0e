"""The training cache: phone photos are decoded once, before the first epoch, at training size."""
from __future__ import annotations

import os
import pickle
import threading
import time

import pytest

import classifier.images
from harness.bench_assets import write_labelled_photos
from training import data


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A dozen phone-shaped JPEGs (4:3, stored sideways with EXIF orientation 6), 2 classes."""
    root = write_labelled_photos(tmp_path_factory.mktemp("phone"), 6, size=(400, 300))
    files = sorted(root.rglob("*.jpg"))
    train, valid = data.random_split(files, 0.25, 42)
    return data.Dataset(root=root, layout="folders", vocab=["box", "disc"], train=train,
                        valid=valid)


@pytest.fixture
def decodes(monkeypatch):
    """The files classifier.images.load_rgb (the decoder) is called on."""
    seen = []
    real = classifier.images.load_rgb

    def counting(source, *args, **kwargs):
        seen.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(classifier.images, "load_rgb", counting)
    return seen


@pytest.fixture
def caches(monkeypatch):
    """The DecodeCaches that data.dataloaders makes."""
    made = []

    class Recorded(data.DecodeCache):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(data, "DecodeCache", Recorded)
    return made


def one_epoch(dls) -> None:
    for loader in (dls.train, dls.valid):
        for _ in loader:
            pass


def test_a_second_epoch_decodes_nothing(photos, decodes):
    dls = data.dataloaders(photos, 32, 4, augment=False)
    one_epoch(dls)
    first = len(decodes)
    assert sorted(decodes) == sorted(photos.train + photos.valid)  # each file once
    one_epoch(dls)
    assert len(decodes) == first


def test_the_photos_are_decoded_before_the_first_epoch_on_a_thread_per_core(photos, monkeypatch):
    seen, threads = [], set()
    real = classifier.images.load_rgb

    def slow(source, *args, **kwargs):
        seen.append(source)
        threads.add(threading.get_ident())
        time.sleep(0.02)  # long enough for both threads to take a share
        return real(source, *args, **kwargs)

    monkeypatch.setattr(classifier.images, "load_rgb", slow)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    dls = data.dataloaders(photos, 32, 4, augment=False)
    assert sorted(seen) == sorted(photos.train + photos.valid)  # each file once
    assert len(threads) == 2
    seen.clear()
    one_epoch(dls)
    assert seen == []


def test_the_cache_holds_the_pixels_serving_decodes(photos, caches):
    one_epoch(data.dataloaders(photos, 32, 4, augment=False))
    [cache] = caches
    assert len(cache.images) == 12
    # upright 400x300 at libjpeg's 1/8 (shorter side at least 32, what the Resize takes
    # without augmentation), not resized again
    assert {im.size for im in cache.images.values()} == {(50, 38)}


def test_augmenting_caches_at_the_decode_size(photos, caches):
    """Augmentation's crops keep twice the input: 1/4 scale (shorter side at least 64)."""
    one_epoch(data.dataloaders(photos, 32, 4, augment=True))
    assert {im.size for im in caches[0].images.values()} == {(100, 75)}


def test_a_changed_file_is_decoded_again(photos, decodes):
    dls = data.dataloaders(photos, 32, 4, augment=False)
    one_epoch(dls)
    changed = photos.valid[0]
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    decodes.clear()
    one_epoch(dls)
    assert decodes == [changed]


def test_the_cache_is_bounded(photos, decodes, caches, monkeypatch):
    monkeypatch.setattr(data, "DECODE_CACHE_BYTES", 5 * 50 * 38 * 3)  # room for 5 photos
    dls = data.dataloaders(photos, 32, 4, augment=False)
    one_epoch(dls)
    decodes.clear()
    one_epoch(dls)
    assert len(caches[0].images) == 5 and len(decodes) == 12 - 5


def test_an_export_carries_no_cache(photos):
    loader = classifier.images.RGBLoader(32)
    loader.cache = data.DecodeCache()
    loader(photos.valid[0])
    assert loader.cache.images
    blob = pickle.dumps(loader)
    assert b"DecodeCache" not in blob and b"training" not in blob
    assert pickle.loads(blob).cache is None


def test_verifying_the_photos_keeps_their_decodes_for_training(photos, decodes, monkeypatch):
    """The training command's check of each file decodes it as the loader does and keeps the
    result: every photo is decoded once in all, and the epochs get the loader's own pixels."""
    checked = []
    real = classifier.images.open_checked

    def counting(data, *args, **kwargs):
        checked.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(classifier.images, "open_checked", counting)
    loader = data.training_loader(32, augment=False)
    ds = data.find_dataset(photos.root, 0.25, 42, loader=loader)
    assert len(checked) == 12 and len(loader.cache.images) == 12
    one_epoch(data.dataloaders(ds, 32, 4, augment=False, loader=loader))
    assert decodes == [] and len(checked) == 12  # neither the fill nor the epoch decoded again
    for path in ds.train[:3]:
        kept = loader.cache.image(path, lambda p: pytest.fail(f"{p} is not kept"))
        assert kept.tobytes() == real(path.read_bytes(), min_side=loader.min_side).tobytes()
        assert kept.size == (50, 38)  # the loader's decode, not the 512 px a plain check keeps


class Stop(BaseException):
    """Ends a training command once it has built its DataLoaders (the CLI catches Exception)."""


def test_the_training_command_verifies_into_the_loader_it_trains_with(monkeypatch, tmp_path, photos):
    from training import train

    seen = {}
    real_find = data.find_dataset

    def find_dataset(*args, loader=None, **kwargs):
        seen["verified into"] = loader
        return real_find(*args, loader=loader, **kwargs)

    def dataloaders(ds, *args, loader=None, **kwargs):
        seen["trained with"], seen["dataset"] = loader, ds
        raise Stop

    monkeypatch.setattr(data, "find_dataset", find_dataset)
    monkeypatch.setattr(data, "dataloaders", dataloaders)
    with pytest.raises(Stop):
        train.main([str(photos.root), "--out", str(tmp_path / "m.pkl"), "--size", "32",
                    "--no-augment", "--no-pretrained", "--epochs", "1"])
    assert seen["verified into"] is seen["trained with"]
    ds, cache = seen["dataset"], seen["trained with"].cache
    # every training and validation photo kept, and none of the test set's
    assert ds.test and {key[0] for key in cache.images} == {str(p) for p in ds.train + ds.valid}
    assert cache.used == sum(im.width * im.height * 3 for im in cache.images.values())
