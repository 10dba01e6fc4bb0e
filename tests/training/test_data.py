"""Finding, verifying and splitting images: bad files are skipped, listed, and left untouched."""
from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from classifier.versions import served_model_path
from tests.conftest import make_image_folder
from tests.training.helpers import FAST, snapshot
from training import UsageError, train
from training.data import find_dataset, find_labelled
from training.demo_data import write_digits


def add_bad_files(root):
    """One of each problem, in class folders; returns {relative path: reason fragment}."""
    good = (root / "red").glob("*.png").__next__().read_bytes()
    (root / "red" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    (root / "red" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "green" / "empty.png").write_bytes(b"")
    (root / "green" / "notes.txt").write_text("photos from the trip\n")
    (root / "blue" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "blue" / ".hidden.png").write_bytes(b"junk")
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "x.png").write_bytes(b"junk")
    return {"red/corrupt.jpg": "", "red/truncated.png": "", "green/empty.png": "0 bytes",
            "green/notes.txt": "not an image"}


def test_bad_files_are_skipped_with_reasons_and_left_on_disk(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class=6)
    bad = add_bad_files(root)
    ds = find_dataset(root)
    skipped = {str(p["path"]).removeprefix(str(root) + "/"): p["reason"] for p in ds.skipped}
    assert set(skipped) == set(bad)
    for path, fragment in bad.items():
        assert fragment in skipped[path], skipped[path]
    assert len(ds.train) + len(ds.valid) == 18 and ds.vocab == ["blue", "green", "red"]


def test_training_reports_skipped_files_and_never_touches_the_data(tmp_path, capsys):
    root = make_image_folder(tmp_path / "data", per_class=8)
    bad = add_bad_files(root)
    before = snapshot(root)
    out = tmp_path / "models" / "export.pkl"
    assert train.main([str(root), *FAST, "--epochs", "1", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    for path in bad:
        assert path in stdout
    assert ".DS_Store" not in stdout and ".hidden" not in stdout
    assert snapshot(root) == before  # nothing deleted, moved, modified or added
    meta = json.loads(served_model_path(out).with_suffix(".json").read_text())
    listed = {s["path"].removeprefix(str(root.resolve()) + "/").removeprefix(str(root) + "/")
              for s in meta["dataset"]["skipped"]}
    assert listed == set(bad) and all(s["reason"] for s in meta["dataset"]["skipped"])


def test_train_valid_test_layout_reports_test_separately(tmp_path, capsys):
    root = tmp_path / "data"
    make_image_folder(root / "train", per_class=10, seed=1)
    make_image_folder(root / "validation", per_class=3, seed=2)
    make_image_folder(root / "test", per_class=2, seed=3)
    out = tmp_path / "models" / "export.pkl"
    # fp32: the best epoch's loss and the export's are compared exactly below (in bf16 autocast,
    # where the CPU has it, the epochs' validation and the fp32 score differ by up to 0.02)
    assert train.main([str(root), *FAST, "--precision", "fp32", "--epochs", "3", "--early-stop", "1",
                       "--out", str(out)]) == 0
    assert "test (scored once, after training)" in capsys.readouterr().out
    meta = json.loads(served_model_path(out).with_suffix(".json").read_text())
    assert meta["dataset"]["layout"] == "splits"
    assert meta["dataset"]["counts"]["train"] == {"blue": 10, "green": 10, "red": 10}
    assert meta["dataset"]["counts"]["valid"] == {"blue": 3, "green": 3, "red": 3}
    assert meta["dataset"]["counts"]["test"] == {"blue": 2, "green": 2, "red": 2}
    assert meta["metrics"]["validation"]["n"] == 9 and meta["metrics"]["test"]["n"] == 6
    # --early-stop keeps the best epoch: its weights are the ones evaluated and exported.
    history = meta["history"]
    best = min(history, key=lambda h: h["valid_loss"])
    assert meta["training"]["best_epoch"] == best["epoch"]
    assert abs(meta["metrics"]["validation"]["loss"] - best["valid_loss"]) < 1e-3
    assert "Test" in (served_model_path(out).parent / "report" / "report.html").read_text()


def test_random_split_is_seeded_and_every_class_keeps_a_training_image(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class=2)
    a, b = find_dataset(root, 0.5, seed=7), find_dataset(root, 0.5, seed=7)
    assert a.valid == b.valid and a.train == b.train
    assert {p.parent.name for p in a.train} == {"blue", "green", "red"}
    assert set(a.train).isdisjoint(a.valid) and len(a.train) + len(a.valid) == 6


def test_nested_and_loose_files_are_listed_not_guessed(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class=3)
    (root / "readme.md").write_text("about the data")
    (root / "red" / "more").mkdir()
    shutil.copy(next((root / "red").glob("*.png")), root / "red" / "more" / "x.png")
    reasons = {p["path"].removeprefix(str(root) + "/"): p["reason"] for p in find_dataset(root).skipped}
    assert "not inside a class folder" in reasons["readme.md"]
    assert "sub-folder" in reasons["red/more/x.png"]


@pytest.mark.parametrize("layout, message", [
    ("one_class", "at least 2 class folders"),
    ("lonely_image", "has 1 usable image"),
    ("empty_valid", "validation split is empty"),
    ("empty_test", "test split is empty"),
    ("unknown_valid_class", "no training folder"),
])
def test_unusable_datasets_raise_one_line_errors(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout == "one_class":
        make_image_folder(root)
        for label in ("green", "blue"):
            shutil.rmtree(root / label)
    elif layout == "lonely_image":
        make_image_folder(root, per_class=3)
        for extra in sorted((root / "blue").iterdir())[1:]:
            extra.unlink()
    elif layout == "empty_valid":
        make_image_folder(root / "train", per_class=3)
        (root / "valid" / "red").mkdir(parents=True)
    elif layout == "empty_test":
        make_image_folder(root / "train", per_class=3)
        make_image_folder(root / "valid", per_class=1)
        (root / "test").mkdir()
    elif layout == "unknown_valid_class":
        make_image_folder(root / "train", per_class=3)
        make_image_folder(root / "valid", per_class=1)
        shutil.copytree(root / "valid" / "red", root / "valid" / "purple")
    with pytest.raises(UsageError, match=message) as err:
        find_dataset(root)
    assert "\n" not in str(err.value)


def test_evaluate_finds_the_test_split_of_a_split_layout(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root / "train", per_class=3)
    make_image_folder(root / "valid", per_class=2)
    make_image_folder(root / "test", per_class=1)
    paths, skipped = find_labelled(root)
    assert len(paths) == 3 and all(p.parent.parent.name == "test" for p in paths) and not skipped


def test_demo_digits_are_written_once(tmp_path):
    root = write_digits(tmp_path / "digits")
    files = sorted(root.glob("*/*.png"))
    assert len(files) == 1797 and sorted(p.name for p in root.iterdir()) == [str(d) for d in range(10)]
    with Image.open(files[0]) as im:
        assert im.mode == "L" and im.size == (8, 8)
    stamp = files[0].stat().st_mtime_ns
    write_digits(root)
    assert files[0].stat().st_mtime_ns == stamp
