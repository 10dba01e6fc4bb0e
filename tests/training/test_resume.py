"""Ctrl-C and --resume: exit 130 with a checkpoint to resume from, a new run on the same --out
overwrites an old checkpoint, and flags given with --resume are never silently dropped."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from classifier.versions import served_model_path
from tests.conftest import ROOT, make_image_folder
from tests.training.helpers import FAST, leftovers
from training import checkpoint, train


def old_checkpoint(out, **settings) -> dict:
    """What an abandoned run left: a checkpoint with other settings."""
    config = train.TrainConfig(**{"data_dir": "/elsewhere", "pretrained": False, "epochs": 7,
                                  "size": 32, "bs": 8, "lr": 1e-2, "augment": False, **settings})
    state = {"config": dataclasses.asdict(config), "vocab": ["a", "b"], "model": {}, "opt": None,
             "phase": 0, "epoch": 3, "history": [], "best": None, "best_epoch": None, "wait": 0,
             "stopped_early": False}
    checkpoint.checkpoint_path(out).parent.mkdir(parents=True)
    torch.save(state, checkpoint.checkpoint_path(out))
    return state


@pytest.mark.slow
def test_ctrl_c_exits_130_with_a_resumable_checkpoint_that_replaced_the_old_one(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=6)
    out = tmp_path / "models" / "export.pkl"
    old_checkpoint(out)
    # --early-stop brings in fastai's SaveModelCallback/EarlyStoppingCallback, whose state resumes
    # too. fp32: the epochs' validation runs as the fit does, in bf16 autocast where the CPU has
    # it, and the export is scored in fp32 (losses up to 0.02 apart): the best epoch's
    # loss and the export's are compared exactly below.
    argv = [str(data), *FAST, "--precision", "fp32", "--epochs", "3", "--early-stop", "5",
            "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "training.train", *argv], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        if line.startswith("1/3"):  # two epochs to go: the signal lands inside the fit
            break
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert f"--resume --out {out}" in stderr and "Traceback" not in stderr
    saved = checkpoint.load(out)  # the new run's, not the abandoned one's
    assert saved["config"]["epochs"] == 3 and saved["config"]["data_dir"] == str(data)
    assert [h["epoch"] for h in saved["history"]] == [1] and not out.exists()

    assert train.main(["--resume", *argv]) == 0  # the same flags again: accepted
    meta = json.loads(served_model_path(out).with_suffix(".json").read_text())
    assert meta["training"]["resumed"] is True and [h["epoch"] for h in meta["history"]] == [1, 2, 3]
    best = min(meta["history"], key=lambda h: h["valid_loss"])
    assert meta["training"]["best_epoch"] == best["epoch"]
    assert meta["metrics"]["validation"]["loss"] == pytest.approx(best["valid_loss"], abs=1e-3)
    assert not checkpoint.checkpoint_path(out).exists() and leftovers(out.parent) == []


@pytest.mark.parametrize("flag, value, shown", [
    (["--epochs", "9"], "9", "--epochs 9 differs from its 7"),
    (["--lr", "0.5"], "0.5", "--lr 0.5 differs"),
    (["--augment"], None, "--augment True differs from its False"),
    (["{tmp}/other"], None, "DATA_DIR"),
])
def test_a_flag_that_would_change_a_resumed_run_is_refused(tmp_path, capsys, flag, value, shown):
    out = tmp_path / "models" / "export.pkl"
    old_checkpoint(out)
    code = train.main(["--resume", "--out", str(out), *(f.format(tmp=tmp_path) for f in flag)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --resume") and err.count("\n") == 1, err
    assert shown in err


def test_flags_equal_to_the_checkpoint_are_accepted_with_resume(tmp_path):
    out = tmp_path / "models" / "export.pkl"
    state = old_checkpoint(out, data_dir=str(tmp_path / "data"))
    config, _, saved = train.parse_config([str(tmp_path / "data"), "--resume", "--out", str(out),
                                           "--epochs", "7", "--no-augment", "--lr", "0.01"])
    assert dataclasses.asdict(config) == state["config"] and saved["epoch"] == 3
