"""The CLI's contract: bad input is exit code 2 and one line; interrupts checkpoint and resume;
a failed or interrupted run never leaves a partial export; --weights fine-tunes offline."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import torchvision

from classifier.model_files import sha256_file
from classifier.versions import served_model_path
from tests.conftest import ROOT, make_image_folder, run_training
from tests.training.helpers import FAST, leftovers
from training import evaluate, model, report, train


@pytest.fixture
def data(tmp_path):
    return make_image_folder(tmp_path / "data", per_class=6)


def one_line_error(capsys, argv) -> str:
    try:
        code = train.main(argv)
    except SystemExit as exc:  # argparse-level errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["{missing}"], "does not exist"),
    (["{file}"], "not a directory"),
    (["{data}", "--valid-pct", "1.5"], "--valid-pct must be between 0 and 1"),
    (["{data}", "--valid-pct", "0"], "--valid-pct must be between 0 and 1"),
    (["{data}", "--epochs", "0"], "--epochs must be at least 1"),
    (["{data}", "--size", "0"], "--size must be at least"),
    (["{data}", "--bs", "-3"], "--bs must be at least 1"),
    (["{data}", "--lr", "-1"], "--lr must be a positive"),
    (["{data}", "--early-stop", "-1"], "--early-stop must be 0"),
    (["{data}", "--precision", "fp16"], "--precision must be one of auto, bf16, fp32"),
    (["{data}", "--arch", "resnet9000"], "Unknown --arch 'resnet9000'"),
    (["{data}", "--weights", "{missing}"], "--weights file"),
    (["{data}", "--weights", "{file}", "--no-pretrained"], "drop --no-pretrained"),
    (["{data}", "--resume", "--out", "{tmp}/nothing/export.pkl"], "no checkpoint"),
    (["{data}", "--out", "{tmp}/model.txt"], "--out must name a .pkl"),
    (["{data}", "--epochs", "three"], "invalid int value"),
    (["{data}", "--colour"], "unrecognized arguments"),
])
def test_bad_options_are_one_line_and_exit_2(capsys, tmp_path, data, argv, message):
    (tmp_path / "file.txt").write_text("x")
    names = {"missing": tmp_path / "missing", "file": tmp_path / "file.txt", "data": data, "tmp": tmp_path}
    assert message in one_line_error(capsys, [a.format(**names) for a in argv])


def test_bad_data_is_one_line_and_exit_2_with_no_traceback(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class=1)
    result = run_training(root, *FAST, "--out", tmp_path / "export.pkl")
    assert result.returncode == 2
    assert result.stderr.startswith("error: Class 'blue' has 1 usable image")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "export.pkl").exists()


def test_pretrained_offline_names_the_ways_out(capsys, tmp_path, data, monkeypatch):
    # No network in tests: an empty torch cache and a proxy that refuses every connection.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    err = one_line_error(capsys, [str(data), "--size", "32", "--lr", "1e-2",
                                  "--out", str(tmp_path / "m" / "export.pkl")])
    assert "--no-pretrained" in err and "--weights FILE" in err
    assert not (tmp_path / "m" / "export.pkl").exists()


def test_weights_that_do_not_fit_the_arch_are_refused(capsys, tmp_path, data):
    weights = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), weights)
    err = one_line_error(capsys, [str(data), "--weights", str(weights), "--size", "32", "--lr", "1e-2",
                                  "--out", str(tmp_path / "m" / "export.pkl")])
    assert "does not fit --arch resnet18" in err


def test_fine_tune_from_a_local_weights_file(tmp_path, data, capsys):
    weights = tmp_path / "resnet18.pth"
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, weights)
    out = tmp_path / "models" / "export.pkl"
    assert train.main([str(data), "--weights", str(weights), "--size", "32", "--bs", "8", "--epochs", "1",
                       "--no-augment", "--lr", "1e-3", "--out", str(out)]) == 0
    assert "fine_tune from" in capsys.readouterr().out
    served = served_model_path(out)
    meta = json.loads(served.with_suffix(".json").read_text())
    assert meta["pretrained"] == f"weights:{weights}" and meta["training"]["method"] == "fine_tune"
    assert [h["phase"] for h in meta["history"]] == [0, 1]  # one frozen epoch, then unfrozen
    from classifier.model_files import load_learner_checked
    learner, _ = load_learner_checked(served)
    norms = [t for t in learner.dls.after_batch.fs if type(t).__name__ == "Normalize"]
    assert norms and torch.allclose(norms[0].mean.flatten().cpu(), torch.tensor([0.485, 0.456, 0.406]))


def test_the_body_of_a_weights_file_is_what_the_learner_starts_from(tmp_path, data):
    from training.data import dataloaders, find_dataset
    weights = tmp_path / "resnet18.pth"
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save({"state_dict": state}, weights)
    dls = dataloaders(find_dataset(data), 32, 8, augment=False)
    config, _, _ = train.parse_config([str(data), "--weights", str(weights)])
    learn = model.build_learner(dls, config, torchvision.models.resnet18, tmp_path)
    assert torch.equal(learn.model[0][0].weight, state["conv1.weight"])
    assert torch.equal(learn.model[0][4][0].conv1.weight, state["layer1.0.conv1.weight"])


def test_sigterm_checkpoints_keeps_the_old_export_and_resume_finishes(tmp_path, data, trained_model):
    models = tmp_path / "models"
    models.mkdir()
    out = models / "export.pkl"
    shutil.copy(trained_model, out)  # the previous model, which must survive the interruption
    old = sha256_file(out)
    proc = subprocess.Popen([sys.executable, "-m", "training.train", str(data), *FAST, "--epochs", "4",
                             "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        if line.startswith("1/4"):
            break
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    assert sha256_file(out) == old and leftovers(models) == []
    assert (models / "checkpoints" / "export.pth").is_file()

    assert train.main(["--resume", "--out", str(out)]) == 0
    served = served_model_path(out)  # the first version of this folder, so live
    meta = json.loads(served.with_suffix(".json").read_text())
    assert meta["training"]["resumed"] is True and meta["sha256"] == sha256_file(served) != old
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3, 4]
    assert sha256_file(out) == old  # the single export.pkl stays, unserved while live.json names a version
    assert not (models / "checkpoints" / "export.pth").exists() and leftovers(models) == []
    assert leftovers(models / "versions") == []


def test_a_failure_after_training_leaves_the_previous_export_untouched(tmp_path, data, trained_model,
                                                                        monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    out = models / "export.pkl"
    for name in ("export.pkl", "export.json"):
        shutil.copy(trained_model.parent / name, models / name)
    shutil.copytree(trained_model.parent / "examples", models / "examples")
    before = {p.name: sha256_file(p) for p in models.glob("export.*")}

    def broken(*_args, **_kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(report, "plot_history", broken)
    with pytest.raises(OSError, match="disk full"):
        train.main([str(data), *FAST, "--epochs", "1", "--out", str(out)])
    assert {p.name: sha256_file(p) for p in models.glob("export.*")} == before
    assert leftovers(models) == [] and sorted(p.name for p in models.iterdir()) == \
        ["examples", "export.json", "export.pkl", "versions"]  # no pointer, no test set
    assert list((models / "versions").iterdir()) == []  # no version, no staging folder


def test_evaluate_cli_scores_a_model_on_a_folder(trained_model, image_folder, tmp_path, capsys):
    assert evaluate.main([str(trained_model), str(image_folder)]) == 0
    stdout = capsys.readouterr().out
    assert "accuracy" in stdout and "precision" in stdout and "confusion matrix" in stdout
    assert "(48 images)" in stdout
    bad = subprocess.run([sys.executable, "-m", "training.evaluate", str(trained_model), str(tmp_path / "no")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "does not exist" in bad.stderr
