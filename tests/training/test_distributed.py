"""Training on 2 CPU processes under `accelerate launch --multi_gpu` (gloo; `--cpu` alone would
start one process) against one process, on the digits demo at the same effective batch size:
the accuracy agrees within docs/training.md's tolerance, the learning-rate finder runs once,
and rank 0 alone writes the version. Ctrl-C to the launcher saves a checkpoint that
`--resume` under the launcher continues."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT, make_image_folder
from tests.training.helpers import FAST, leftovers
from training import checkpoint

TOLERANCE = 0.05  # docs/training.md, "Several processes": how it was chosen
DEMO = ["--epochs", "3"]  # the demo's own settings (24 px, from scratch, bs 64), 3 epochs not 5
LAUNCH_TWO = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "-m", "training.train"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}


def train(command: list[str], cwd, out) -> tuple[str, dict]:
    """Run a training command in cwd (the demo writes data/digits/ there); its log and the
    export.json of the one version it wrote."""
    proc = subprocess.run([*command, "--out", str(out)], cwd=cwd, capture_output=True,
                          text=True, timeout=1200, env=ENV)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert len(list((out.parent / "versions").iterdir())) == 1, log[-3000:]
    for name in ("export.pkl", "report.html"):
        assert len(list(out.parent.rglob(name))) == 1, name  # rank 0's only
    assert len((out.parent / "history.jsonl").read_text().splitlines()) == 1
    assert not checkpoint.checkpoint_path(out).parent.exists() and leftovers(out.parent) == []
    return log, json.loads(next(out.parent.rglob("export.json")).read_text())


@pytest.mark.slow
@pytest.mark.timeout(2400)  # about 2 min on 2 quiet cores; at a load of 7, 3 min and over 10
def test_two_processes_under_accelerate_agree_with_one(tmp_path):
    two_log, two = train([*LAUNCH_TWO, *DEMO], tmp_path, tmp_path / "two" / "export.pkl")
    one_log, one = train([sys.executable, "-m", "training.train", *DEMO], tmp_path,
                         tmp_path / "one" / "export.pkl")

    assert "2 processes of bs 32" in two_log  # each takes bs / 2: the effective batch is 64
    assert one["training"]["bs"] == two["training"]["bs"] == 64
    assert one_log.count("from lr_find") == 1 and two_log.count("from lr_find") == 1
    assert two_log.count("validation: accuracy") == 1 and two_log.count("wrote version") == 1
    assert "no ONNX graph" not in two_log  # rank 0 alone after the fit: no barrier to wait at
    accuracy = [m["metrics"]["validation"]["accuracy"] for m in (one, two)]
    print(f"validation accuracy: 1 process {accuracy[0]:.4f}, 2 processes {accuracy[1]:.4f}")
    assert accuracy[0] > 0.8  # well above chance (0.1): the comparison means something
    assert abs(accuracy[1] - accuracy[0]) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ctrl_c_to_the_launcher_saves_a_checkpoint_that_resume_continues(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=8)
    out = tmp_path / "models" / "export.pkl"
    argv = [str(data), *FAST, "--epochs", "8", "--out", str(out)]
    launcher = subprocess.Popen([*LAUNCH_TWO, *argv], cwd=tmp_path, text=True, env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in launcher.stdout:
        if line.startswith("1/8"):  # seven epochs to go: the signal lands inside the fit
            break
    launcher.send_signal(signal.SIGINT)  # Ctrl-C; the launcher passes it on to both ranks
    stdout, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert f"--resume --out {out}" in stderr, stdout[-2000:] + stderr[-3000:]
    assert stderr.count("interrupted (SIGINT)") == 1  # rank 0's message alone
    saved = checkpoint.load(out)
    done = [h["epoch"] for h in saved["history"]]
    assert 1 <= len(done) < 8 and done == list(range(1, len(done) + 1)) and not out.exists()

    proc = subprocess.run([*LAUNCH_TWO, "--resume", "--out", str(out)], cwd=tmp_path, text=True,
                          env=ENV, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"epoch {len(done)}) with the interrupted run's settings" in proc.stdout
    meta = json.loads(next(out.parent.rglob("export.json")).read_text())
    assert meta["training"]["resumed"] is True
    assert [h["epoch"] for h in meta["history"]] == list(range(1, 9))
    assert not checkpoint.checkpoint_path(out).exists() and leftovers(out.parent) == []
