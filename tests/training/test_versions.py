"""Versions, the frozen test set, compare, promote and rollback (training/versions.py,
test_set.py, compare.py, promote.py, rollback.py) on three versions trained from scratch:
a baseline, a worse one (60% of its training labels moved to another class) and a better one
(more data, and a frozen test image resubmitted through --extra under another name)."""
from __future__ import annotations

import json
import random
import re
import shutil

import numpy as np
import pytest

from classifier import versions
from harness.images import make_image_folder
from tests.training.helpers import FAST
from training import compare, data, promote, rollback, test_set, train
from training import versions as listing

EPOCHS = "4"  # 32 px from scratch: 2 epochs leave the squares unlearnt, 4 learn them
# The first slow test also trains the three versions (the module's fixture): about 2 minutes of
# CPU; on a 2-core machine shared with other jobs it took over 10 minutes.
TRAINING_TIMEOUT = 1800


def mislabelled_copy(src, dest, share: float, seed: int = 0):
    """A copy of a train/valid/test folder in which `share` of each class's training images
    sit in the next class's folder: labels that are wrong, as bad corrections would be."""
    shutil.copytree(src, dest)
    labels = sorted(p.name for p in (dest / "train").iterdir())
    rng = random.Random(seed)
    for label in labels:
        files = sorted((src / "train" / label).iterdir())
        for f in rng.sample(files, int(len(files) * share)):
            wrong = labels[(labels.index(label) + 1) % len(labels)]
            (dest / "train" / label / f.name).rename(dest / "train" / wrong / f"wrong_{f.name}")
    return dest


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """models/ with the baseline (live), the worse and the better version, and what each
    run handed to the DataBlock."""
    tmp = tmp_path_factory.mktemp("versions")
    base = tmp / "data"
    make_image_folder(base / "train", per_class=12, seed=1)
    make_image_folder(base / "valid", per_class=4, seed=2)
    make_image_folder(base / "test", per_class=20, seed=3)  # 60: McNemar can reach p < 0.05
    worse = mislabelled_copy(base, tmp / "worse", share=0.6)
    more = tmp / "more"  # no test/ folder: the frozen set alone keeps test images out
    shutil.copytree(base, more, ignore=lambda folder, names: ["test"] if folder == str(base) else [])
    make_image_folder(more / "train" / "extra_seed", per_class=12, seed=4)
    for label_dir in (more / "train" / "extra_seed").iterdir():  # 24 training images a class
        for f in label_dir.iterdir():
            f.rename(more / "train" / label_dir.name / f"more_{f.name}")
    shutil.rmtree(more / "train" / "extra_seed")

    out = tmp / "models" / "export.pkl"
    trained_on = []
    build = data.dataloaders

    def spy(ds, *args, **kwargs):
        trained_on.append([*ds.train, *ds.extra, *ds.valid])
        return build(ds, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "dataloaders", spy)
        assert train.main([str(base), *FAST, "--epochs", EPOCHS, "--out", str(out)]) == 0
        # a frozen test image, resubmitted as a correction under another name
        resubmitted = tmp / "feedback" / "red"
        resubmitted.mkdir(parents=True)
        frozen = test_set.read(out.parent)["images"]
        red = next(i for i in frozen if i["label"] == "red")
        shutil.copyfile(out.parent / red["path"], resubmitted / "upload_1234.png")
        assert train.main([str(worse), *FAST, "--epochs", EPOCHS, "--out", str(out)]) == 0
        assert train.main([str(more), *FAST, "--epochs", EPOCHS, "--extra", str(tmp / "feedback"),
                           "--out", str(out)]) == 0
    return out.parent, versions.list_versions(out.parent), trained_on, red


@pytest.mark.slow
@pytest.mark.timeout(TRAINING_TIMEOUT)
def test_the_first_version_is_live_and_later_ones_wait(three, capsys):
    root, names, _, _ = three
    assert len(names) == 3 and versions.live_version(root) == names[0]
    for name in names:
        folder = versions.version_dir(root, name)
        meta = json.loads((folder / "export.json").read_text())
        assert meta["version"] == name
        files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert set(meta["files"]) == files - {"export.json"}  # every file, with its sha256
        assert "export.onnx" in files and meta["onnx"]["compiled"]
    assert not [p for p in (root / "versions").iterdir() if p.name.startswith(".")]  # no staging
    assert listing.main(["--models", str(root)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [r.split()[1] for r in rows if r.startswith("* ")] == [names[0]]
    assert [r.split()[0] for r in rows if r.startswith("  2")] == names[1:]


@pytest.mark.slow
@pytest.mark.timeout(TRAINING_TIMEOUT)
def test_a_frozen_test_image_resubmitted_under_another_name_is_not_trained_on(three):
    root, names, trained_on, red = three
    frozen = {i["sha256"] for i in test_set.read(root)["images"]}
    assert len(frozen) == 60
    for items in trained_on:
        assert not frozen & {data.content_hash(p) for p in items}
    meta = json.loads((versions.version_dir(root, names[2]) / "export.json").read_text())
    assert meta["test_set"]["excluded"] == 1  # upload_1234.png, kept out
    assert meta["dataset"]["images"]["extra"] == 0 and meta["metrics"]["test"]["n"] == 60
    assert "1</b> image(s)" in (versions.version_dir(root, names[2]) / "report" / "report.html").read_text()


@pytest.mark.slow
@pytest.mark.timeout(TRAINING_TIMEOUT)
def test_compare_calls_the_worse_one_worse_and_promote_refuses_it(three, capsys, tmp_path):
    root, (baseline, worse, _), _, _ = three
    page = tmp_path / "page.html"
    assert compare.main(["--models", str(root), "live", worse, "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert "verdict: B is worse than A" in out
    p = float(re.search(r"McNemar's exact test, p = ([0-9.e+-]+)\)", out).group(1))
    assert p < 0.05
    html = page.read_text()
    assert html.count("<figure>") > 10 and html.count("actual \\ predicted") == 2

    assert promote.main(["--models", str(root), worse]) == 1
    assert "refused" in capsys.readouterr().err
    assert versions.live_version(root) == baseline
    assert promote.main(["--models", str(root), worse, "--force"]) == 0
    assert "--force" in capsys.readouterr().err
    last = versions.read_history(root)[-1]
    assert (last["version"], last["verdict"], last["forced"]) == (worse, "worse", True)
    assert rollback.main(["--models", str(root)]) == 0
    assert versions.live_version(root) == baseline


@pytest.mark.slow
@pytest.mark.timeout(TRAINING_TIMEOUT)
def test_the_better_one_is_promoted_then_rolled_back(three, capsys):
    root, (baseline, _, better), _, _ = three
    assert promote.main(["--models", str(root), better]) == 0
    assert versions.live_version(root) == better
    assert versions.read_history(root)[-1]["verdict"] in ("better", "no measurable difference")
    assert rollback.main(["--models", str(root)]) == 0
    assert versions.live_version(root) == baseline


def test_mcnemar_and_the_verdict():
    a = np.array([True] * 10 + [False] * 2 + [True] * 48)
    b = np.array([False] * 10 + [True] * 2 + [True] * 48)
    test = compare.mcnemar(a, b)
    assert (test["only_a_right"], test["only_b_right"]) == (10, 2)
    assert test["p_value"] == pytest.approx(0.03857, abs=1e-4)  # 2 * P(X <= 2), X ~ B(12, 1/2)
    assert compare.verdict(test) == "worse"
    assert compare.verdict(compare.mcnemar(b, a)) == "better"
    assert compare.verdict(compare.mcnemar(a, a)) == "no measurable difference"


def test_expected_calibration_error():
    probs = np.array([[0.9, 0.1]] * 10 + [[0.6, 0.4]] * 10)
    calibrated = np.array([0] * 9 + [1] + [0] * 6 + [1] * 4)  # 90 % and 60 % right
    assert compare.expected_calibration_error(probs, calibrated) == pytest.approx(0.0)
    # the 0.6 bin always right: |1 - 0.6| weighted by its half of the images
    assert compare.expected_calibration_error(probs, np.array([0] * 9 + [1] + [0] * 10)) == \
        pytest.approx(0.2)


@pytest.mark.parametrize("argv, message", [
    (["live", "20261205-091500-ab12cd"], "no live version"),
    (["../etc", "live"], "not a version name"),
])
def test_bad_input_is_exit_code_2(tmp_path, capsys, argv, message):
    assert compare.main(["--models", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
    assert promote.main(["--models", str(tmp_path), argv[-1]]) == 2
    assert rollback.main(["--models", str(tmp_path)]) == 2


def test_later_runs_keep_frozen_images_out_whatever_their_name(tmp_path):
    images = make_image_folder(tmp_path / "data", per_class=6)
    ds = data.find_dataset(images, 0.2, 42)
    root = tmp_path / "models"
    root.mkdir()
    first, info = test_set.apply(ds, root, None, 0.3, 42)
    assert info["frozen_now"] == len(first.test) > 0
    test_set.record(root, first.test, "20261205-091500-ab12cd")
    resubmitted = tmp_path / "feedback" / first.test[0].parent.name
    resubmitted.mkdir(parents=True)
    shutil.copyfile(first.test[0], resubmitted / "renamed.png")
    again = data.find_dataset(images, 0.2, 42, extra=tmp_path / "feedback")
    assert again.extra  # find_extra alone does not know the frozen set
    later, info = test_set.apply(again, root, test_set.read(root), 0.3, 42)
    assert info["excluded"] == len(first.test) + 1 and later.extra == []
    hashes = {data.content_hash(p) for p in later.test}
    assert {data.content_hash(p) for p in first.test} == hashes
    assert not hashes & {data.content_hash(p) for p in later.train + later.valid}


def test_promote_moves_the_pointer_only_when_not_worse(tmp_path, monkeypatch, capsys):
    old, new = "20261205-091500-ab12cd", "20261205-100000-001122"
    for name in (old, new):
        (tmp_path / "versions" / name).mkdir(parents=True)
        (tmp_path / "versions" / name / "export.pkl").write_bytes(b"model")
    versions.move_pointer(tmp_path, old, "first version")
    answers = {"test": {"only_a_right": 12, "only_b_right": 1, "p_value": 0.003}}
    scored = compare.Scored("x", np.zeros((60, 2)), {"n": 60}, None)
    monkeypatch.setattr(compare, "compare", lambda root, a, b: (scored, scored, answers["test"], [], None))
    monkeypatch.setattr(compare, "summary", lambda *args: "summary")
    assert promote.main(["--models", str(tmp_path), new]) == 1
    assert versions.live_version(tmp_path) == old and len(versions.read_history(tmp_path)) == 1
    answers["test"] = {"only_a_right": 3, "only_b_right": 4, "p_value": 1.0}
    assert promote.main(["--models", str(tmp_path), new]) == 0
    assert versions.live_version(tmp_path) == new
    assert versions.read_history(tmp_path)[-1]["verdict"] == "no measurable difference"
