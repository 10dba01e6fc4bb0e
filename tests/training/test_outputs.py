"""What one training run writes: a version folder, models/versions/<name>/, with export.pkl
(loadable anywhere), export.json, examples/, report/ and the ONNX graph."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from classifier.model_files import load_learner_checked, metadata_path, sha256_file
from classifier.versions import list_versions, served_model_path
from tests.conftest import ROOT
from tests.training.helpers import leftovers
from training import checkpoint, export, train

LOAD_AND_PREDICT = """
import sys
from fastai.learner import load_learner
learn = load_learner(sys.argv[1])
with learn.no_bar():
    label, index, probs = learn.predict(sys.argv[2])
print("PREDICTED", label, len(probs))
"""


def test_metadata_describes_the_export(trained_model):
    meta = json.loads(metadata_path(trained_model).read_text())
    assert meta["sha256"] == sha256_file(trained_model)
    assert meta["vocab"] == ["blue", "green", "red"]
    assert meta["arch"] == "resnet18" and meta["image_size"] == [32, 32]
    assert meta["pretrained"] is False and meta["training"]["method"] == "fit_one_cycle"
    valid = meta["metrics"]["validation"]
    assert set(valid) >= {"accuracy", "error_rate", "loss", "per_class", "confusion_matrix", "n"}
    assert abs(valid["accuracy"] + valid["error_rate"] - 1) < 1e-9
    assert set(valid["per_class"]) == set(meta["vocab"])
    assert all(set(row) == {"precision", "recall", "f1", "support"} for row in valid["per_class"].values())
    cm = valid["confusion_matrix"]
    assert len(cm) == 3 and all(len(r) == 3 for r in cm) and sum(map(sum, cm)) == valid["n"]
    test = meta["metrics"]["test"]  # --test-pct of the training split, frozen by this first version
    assert test["n"] == meta["test_set"]["frozen_now"] == meta["dataset"]["images"]["test"] > 0
    assert meta["version"] == trained_model.parent.name
    assert [h["epoch"] for h in meta["history"]] == [1]
    assert set(meta["history"][0]) >= {"train_loss", "valid_loss", "accuracy", "time"}
    data = meta["dataset"]
    assert data["layout"] == "folders" and data["skipped"] == []
    assert sum(sum(data["counts"][split].values()) for split in ("train", "valid", "test")) == 48
    assert set(meta["versions"]) >= {"python", "torch", "fastai"}
    assert meta["created_at"] and "--no-pretrained" in meta["command"]


def test_examples_and_report_are_written(trained_model):
    models = trained_model.parent
    examples = sorted(p.relative_to(models / "examples").as_posix()
                      for p in (models / "examples").glob("*/*"))
    meta = json.loads(metadata_path(trained_model).read_text())
    assert examples == sorted(f for files in meta["examples"].values() for f in files)
    assert examples and all(f.split("/")[0] in meta["vocab"] for f in examples)
    for name in ("confusion_matrix.png", "top_losses.png", "history.png", "augmentations.png",
                 "report.html"):
        assert (models / "report" / name).stat().st_size > 0, name
    html = (models / "report" / "report.html").read_text()
    assert "confusion_matrix.png" in html and "precision" in html
    assert leftovers(models) == [] and leftovers(models.parent) == []  # no staging folder
    assert not (models.parents[1] / "checkpoints" / "export.pth").exists()


def test_export_loads_in_a_fresh_process_and_predicts(trained_model):
    example = next((trained_model.parent / "examples").glob("*/*.png"))
    result = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, str(trained_model), str(example)],
                            capture_output=True, text=True, cwd="/", timeout=120,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    label, n = result.stdout.split("PREDICTED")[1].split()
    assert label in ("blue", "green", "red") and n == "3"
    learner, meta = load_learner_checked(trained_model)  # the app's loader, checksum included
    assert list(learner.dls.vocab) == meta["vocab"]


def test_the_pickle_needs_nothing_from_training_or_main(trained_model):
    data = trained_model.read_bytes()
    assert b"training.train" not in data and b"__main__" not in data
    assert b"classifier.images" in data  # get_x: load_rgb, the serving code's own normaliser


def test_progress_is_one_clean_line_per_epoch_when_not_a_terminal(image_folder, tmp_path, capsys):
    argv = [str(image_folder), "--no-pretrained", "--size", "32", "--bs", "8", "--epochs", "2",
            "--no-augment", "--out", str(tmp_path / "export.pkl")]
    assert train.main(argv) == 0
    stdout = capsys.readouterr().out
    assert "\r" not in stdout and "\x1b" not in stdout
    rows = [line for line in stdout.splitlines() if line.split()[:1] in (["1/2"], ["2/2"])]
    assert len(rows) == 2, stdout
    assert "learning rate:" in stdout  # no --lr: lr_find's suggestion, printed
    meta = json.loads(metadata_path(served_model_path(tmp_path / "export.pkl")).read_text())
    assert meta["training"]["lr_source"] == "lr_find"


def test_a_version_appears_whole_after_every_file_is_on_disk_or_not_at_all(tmp_path, monkeypatch):
    """The version folder is renamed into place once, after every file in it is fsynced, with
    export.json listing each file's sha256; a failure on the way leaves no version and no
    staging folder."""
    import os

    from training import report

    events = []

    class FakeLearner:
        def export(self, path, **_options):
            path.write_bytes(b"model" * 1000)

    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src, dst):
        events.append(("rename", str(dst)))
        real_rename(src, dst)

    def write_report(folder, *_args):
        folder.mkdir()
        (folder / "report.html").write_text("report")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(report, "write_report", write_report)
    monkeypatch.setattr(export, "compile_graph", lambda model: {"compiled": False, "why_not": "test"})
    meta = {"training": {}, "vocab": ["a", "b"]}
    folder = export.write_version(FakeLearner(), tmp_path, meta, None, [], [], [], started=0)
    assert list_versions(tmp_path) == [folder.name] and meta["version"] == folder.name
    renames = [e for e in events if e[0] == "rename"]
    assert renames == [("rename", str(folder))]
    synced = {Path(name).name for kind, name in events[:events.index(renames[0])] if kind == "fsync"}
    assert synced >= {"export.pkl", "export.json", "report.html"}
    written = json.loads((folder / "export.json").read_text())
    assert written["files"] == {"export.pkl": sha256_file(folder / "export.pkl"),
                                "report/report.html": sha256_file(folder / "report" / "report.html")}
    assert leftovers(tmp_path / "versions") == []

    def fail(model):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "compile_graph", fail)
    with pytest.raises(RuntimeError):
        export.write_version(FakeLearner(), tmp_path, {"training": {}, "vocab": ["a", "b"]},
                             None, [], [], [], started=0)
    assert list_versions(tmp_path) == [folder.name] and leftovers(tmp_path / "versions") == []


def test_a_run_removes_the_temporary_files_of_killed_runs_only(tmp_path):
    """Staging left by a SIGKILLed run goes; a live run's stays."""
    import os
    import time

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    stale = [tmp_path / f".export.{dead}.abc123.tmp", tmp_path / f".export.pkl.{dead}.x_1.tmp",
             tmp_path / f".export.json.{os.getpid()}.y2.tmp", ckpt_dir / f".export.pth.{dead}.z3.tmp",
             tmp_path / ".export.pkl.legacy9.tmp"]
    (tmp_path / "versions").mkdir()
    stale.append(tmp_path / "versions" / f".export.{dead}.v4.tmp")  # a version's staging folder
    live = [tmp_path / f".export.{os.getppid()}.abc.tmp", tmp_path / "export.pkl",
            tmp_path / f".other.pkl.{dead}.q.tmp"]
    for path in stale + live:
        path.write_bytes(b"x")
    for staging in (stale[0], live[0]):  # the staging folders for examples/ and report/
        staging.unlink()
        (staging / "examples").mkdir(parents=True)
    time.sleep(0.05)
    checkpoint.remove_stale_temps(tmp_path / "export.pkl", started=time.time())
    assert [p for p in stale if p.exists()] == []
    assert [p for p in live if not p.exists()] == []
