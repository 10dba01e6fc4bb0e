"""The defaults docs/training.md promises: its Options table is the parser's (every option, each
default as the product resolves it with no flags, so a default made cheap for tests cannot
slip into the product); and on real (tiny) runs: training learns, the demo that `make serve`
trains, augmentation and the batch-size rule for user data, lr_find's clipping, another
architecture, and --extra images that only ever join the training split."""
from __future__ import annotations

import json
import re
import shutil
from types import SimpleNamespace

import pytest
from PIL import Image

from classifier.inference import Predictor
from classifier.model_files import load_learner_checked
from classifier.versions import served_model_path
from tests.conftest import ROOT, make_image_folder
from tests.training.helpers import FAST
from training import evaluate, precision, train
from training.data import find_dataset


def meta_of(out):
    """export.json of the version a run to `out` made live (the first version in a folder)."""
    return json.loads(served_model_path(out).with_suffix(".json").read_text())


def documented_defaults() -> dict[str, str]:
    """docs/training.md's Options table: an option's first name (`--valid-pct F`: --valid-pct)
    -> its "default" column."""
    text = (ROOT / "docs" / "training.md").read_text()
    table = text.split("\n## Options\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| `")]
    return {re.match(r"`([^` ]+)", name.strip())[1]: default.strip() for name, default in rows}


def test_the_options_table_lists_every_option_of_the_parser():
    actions = [a for a in train.build_parser()._actions if a.dest != "help"]
    assert sorted(documented_defaults()) == sorted(a.option_strings[0] if a.option_strings
                                                   else a.metavar for a in actions)


def test_with_no_flags_the_product_gets_the_documented_defaults(tmp_path):
    """What the command line resolves with no flags, for your data and for the demo, written as
    docs/training.md writes it. Fails when a default changes in the code and not in the docs,
    e.g. the tests' cheap 32 px or 1 epoch made the product's default."""
    photos, out, _ = train.parse_config([str(tmp_path)])
    scratch, _, _ = train.parse_config([str(tmp_path), "--no-pretrained"])
    demo, _, _ = train.parse_config([])
    assert (photos.bs, photos.lr, demo.bs, demo.lr) == (None, None, None, None)  # set by the data
    unset = "\u2014"  # the docs' em dash
    expected = {
        "DATA_DIR": "the demo" if demo.data_dir is None else demo.data_dir,
        "--extra": photos.extra or unset,
        "--valid-pct": f"{photos.valid_pct:g}",
        "--test-pct": f"{photos.test_pct:g}",
        "--seed": str(photos.seed),
        "--arch": photos.arch,
        "--pretrained": f"{'pretrained' if photos.pretrained else 'from scratch'} for your data, "
                        f"{'pretrained' if demo.pretrained else 'from scratch'} for the demo",
        "--weights": photos.weights or unset,
        "--epochs": f"{photos.epochs} fine-tuning, {scratch.epochs} from scratch, {demo.epochs} demo",
        "--size": f"{photos.size} (demo: {demo.size})",
        "--bs": f"{train.batch_size(None, 10**6)}, lowered for small datasets",
        "--lr": "lr_find's suggestion",
        "--augment": f"{'augment' if photos.augment else 'no augmentation'} "
                     f"(demo: {'yes' if demo.augment else 'no'})",
        "--precision": "auto" if photos.precision == precision.choose("auto") else photos.precision,
        "--early-stop": f"{photos.early_stop} (off)" if not photos.early_stop else str(photos.early_stop),
        "--resume": unset,
        "--out": str(out),
    }
    assert documented_defaults() == expected


@pytest.mark.slow
def test_training_learns_the_colour_set(tmp_path):
    """An accuracy floor: 3 classes (chance is 1/3), scored on validation and on new images."""
    data = make_image_folder(tmp_path / "data", per_class=40)
    out = tmp_path / "models" / "export.pkl"
    assert train.main([str(data), *FAST, "--epochs", "3", "--out", str(out)]) == 0
    meta = meta_of(out)
    assert meta["metrics"]["validation"]["accuracy"] >= 0.9, meta["history"]
    fresh = make_image_folder(tmp_path / "fresh", per_class=10, seed=99)
    learner, _ = load_learner_checked(served_model_path(out))
    scores, _, _ = evaluate.score(Predictor(learner, runtime="torch"),
                                  sorted(fresh.glob("*/*.png")), meta["vocab"])
    assert scores["accuracy"] >= 0.9, scores
    # 24 validation images, nearly all right: enough for a "not sure" threshold.
    unsure = meta["unsure"]
    assert unsure["method"] == "conformal" and 0 < unsure["threshold"] <= 1
    assert unsure["correct_flagged"] <= unsure["alpha"]


@pytest.mark.slow
def test_the_demo_that_make_serve_trains_uses_24px_5_epochs_no_augmentation(tmp_path, monkeypatch):
    """`make serve` runs `python -m training.train --out models/export.pkl`: no DATA_DIR. The
    digits are cut to 8 per class here so the 5 epochs take seconds, not minutes."""
    from training import demo_data

    digits = demo_data.write_digits(tmp_path / "digits")
    for folder in digits.iterdir():
        for extra in sorted(folder.glob("*.png"))[8:]:
            extra.unlink()
    monkeypatch.setattr(demo_data, "write_digits", lambda: digits)
    out = tmp_path / "models" / "export.pkl"
    assert train.main(["--out", str(out)]) == 0
    meta = meta_of(out)
    assert meta["image_size"] == [24, 24] and meta["pretrained"] is False
    t = meta["training"]
    assert (t["epochs"], t["augment"], t["method"], t["data_dir"]) == (5, False, "fit_one_cycle", None)
    assert len(meta["history"]) == 5 and t["lr_source"] == "lr_find"
    learner, _ = load_learner_checked(served_model_path(out))
    assert not _augmentations(learner)


def _augmentations(learner) -> set[str]:
    names = {type(t).__name__ for t in (*learner.dls.train.after_item.fs, *learner.dls.train.after_batch.fs)}
    return names & {"RandomResizedCrop", "Flip", "Brightness"}  # aug_transforms: Flip, Brightness


@pytest.fixture(scope="module")
def user_data_run(tmp_path_factory):
    """A run on user data with the defaults (no --bs, no --no-augment) and --extra images."""
    tmp = tmp_path_factory.mktemp("defaults")
    data = make_image_folder(tmp / "data", per_class=6)
    extra = make_image_folder(tmp / "feedback", per_class=2, seed=5)
    shutil.rmtree(extra / "green")
    (extra / "feedback.jsonl").write_text('{"label": "red"}\n')
    out = tmp / "models" / "export.pkl"
    assert train.main([str(data), "--extra", str(extra), "--no-pretrained", "--size", "32",
                       "--lr", "1e-2", "--epochs", "1", "--out", str(out)]) == 0
    return SimpleNamespace(data=data, extra=extra, out=out, meta=meta_of(out))


@pytest.mark.slow
def test_user_data_is_augmented_by_default(user_data_run):
    assert user_data_run.meta["training"]["augment"] is True
    learner, _ = load_learner_checked(served_model_path(user_data_run.out))
    assert _augmentations(learner) == {"RandomResizedCrop", "Flip", "Brightness"}


@pytest.mark.slow
def test_small_datasets_get_a_smaller_batch(user_data_run):
    images = user_data_run.meta["dataset"]["images"]
    n_train = images["train"] + images["extra"]
    # 18 photos and 4 extra: 20 % to validation, then 10 % of the rest frozen as the test set
    assert n_train == 18 and user_data_run.meta["training"]["bs"] == 8  # not min(64, 18)


def test_the_batch_size_rule():
    assert [train.batch_size(None, n) for n in (5, 30, 160, 400, 5000)] == [5, 8, 16, 40, 64]
    assert train.batch_size(12, 5000) == 12 and train.batch_size(12, 7) == 7


@pytest.mark.parametrize("found, used", [(1e-7, 1e-4), (3e-3, 3e-3), (0.5, 1e-2)])
def test_lr_find_suggestion_is_clipped(found, used, capsys):
    learner = SimpleNamespace(lr_find=lambda **_: SimpleNamespace(valley=found))
    assert train.suggest_lr(learner) == pytest.approx(used)
    assert ("clipped" in capsys.readouterr().out) == (found != used)


@pytest.mark.slow
def test_extra_images_are_counted_and_only_trained_on(user_data_run):
    meta = user_data_run.meta
    assert meta["dataset"]["counts"]["extra"] == {"blue": 2, "green": 0, "red": 2}
    assert meta["dataset"]["images"]["extra"] == 4
    valid_n = len(find_dataset(user_data_run.data).valid)  # the split without --extra
    assert meta["metrics"]["validation"]["n"] == valid_n
    assert meta["training"]["extra"] == str(user_data_run.extra)


def test_extra_images_join_the_training_split_only(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=6)
    extra = make_image_folder(tmp_path / "feedback", per_class=2, seed=5)
    (extra / "feedback.jsonl").write_text("{}\n")
    plain = find_dataset(data)
    leaked = plain.valid[0]  # a corrected validation example, stored by its sha256
    shutil.copy(leaked, extra / leaked.parent.name / "0a1b2c.png")
    ds = find_dataset(data, extra=extra)
    assert ds.valid == plain.valid and ds.train == plain.train
    assert sorted(p.name for p in ds.extra) == sorted(p.name for p in extra.glob("*/*_*.png"))
    assert not {p.resolve() for p in ds.extra} & {p.resolve() for p in ds.valid}
    reasons = {s["path"]: s["reason"] for s in ds.skipped}
    assert list(reasons) == [str(extra / leaked.parent.name / "0a1b2c.png")]
    assert "validation" in reasons[str(extra / leaked.parent.name / "0a1b2c.png")]


def test_an_extra_label_the_data_does_not_have_is_refused(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", per_class=3)
    extra = tmp_path / "feedback"
    shutil.copytree(data / "red", extra / "purple")
    code = train.main([str(data), "--extra", str(extra), *FAST, "--out", str(tmp_path / "m.pkl")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "purple" in err and "Traceback" not in err
    assert not (tmp_path / "m.pkl").exists()


@pytest.mark.slow
def test_another_architecture_trains_and_serves(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=6)
    out = tmp_path / "models" / "export.pkl"
    assert train.main([str(data), *FAST, "--arch", "mobilenet_v3_small", "--epochs", "1",
                       "--out", str(out)]) == 0
    assert meta_of(out)["arch"] == "mobilenet_v3_small"
    learner, _ = load_learner_checked(served_model_path(out))
    assert any(type(m).__name__ == "InvertedResidual" for m in learner.model.modules())
    example = next((served_model_path(out).parent / "examples").glob("*/*.png"))
    prediction = Predictor(learner, runtime="torch").predict(Image.open(example).convert("RGB"))
    assert prediction.label in ("blue", "green", "red")
