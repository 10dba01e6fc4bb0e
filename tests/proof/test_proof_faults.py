"""Faults around the model file: a bad model at start-up, and training killed mid-run.

- A truncated or swapped export.pkl under the real served command: one clear line saying what
  is wrong, a non-zero exit, no traceback wall, and no endless worker-restart loop.
- `python -m training.train` killed with SIGKILL mid-run (no chance to clean up): no export or
  temp file where the app would load it, and `--resume` finishes the run. (SIGTERM/Ctrl-C then
  --resume is the training suite's own test; this one covers the uncatchable signal.)
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from classifier.model_files import sha256_file
from classifier.versions import served_model_path
from harness import ROOT
from harness.servers import run_to_exit
from tests.conftest import make_image_folder, run_training
from tests.training.helpers import FAST, leftovers

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # gunicorn, and training runs killed


def _assert_one_clear_line(code, output: str, *needles: str) -> None:
    assert code is not None, f"the server did not exit on a bad model:\n{output[-2000:]}"
    assert code != 0, f"exit code 0 on a bad model:\n{output[-2000:]}"
    assert "Traceback" not in output, f"a traceback instead of one line:\n{output[-3000:]}"
    lines = [line for line in output.splitlines() if all(n in line for n in needles)]
    assert lines, f"no line naming {needles}:\n{output[-2000:]}"
    assert max(len(line) for line in lines) < 600
    assert output.count("Booting worker") <= 4, "workers kept restarting on a bad model"


def _model_copy(src: Path, dest: Path, with_metadata: bool) -> Path:
    """export.pkl alone, or its whole version (export.json lists the sha256 of every file)."""
    if with_metadata and src.with_suffix(".json").exists():
        shutil.copytree(src.parent, dest, dirs_exist_ok=True)
    else:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / "export.pkl")
    return dest / "export.pkl"


@pytest.mark.parametrize("with_metadata", [False, True], ids=["no-export.json", "export.json"])
def test_truncated_model_refuses_to_start(proof_model, tmp_path, with_metadata):
    if with_metadata and not proof_model.with_suffix(".json").exists():
        pytest.skip("this model has no export.json")
    model = _model_copy(proof_model, tmp_path, with_metadata)
    data = model.read_bytes()
    model.write_bytes(data[:len(data) // 2])
    code, output = run_to_exit(model, timeout=120)
    _assert_one_clear_line(code, output, "export.pkl")


def test_swapped_model_fails_the_checksum(proof_model, request, tmp_path):
    """export.pkl replaced by another (valid) model: its sha256 no longer matches export.json."""
    sidecar = proof_model.with_suffix(".json")
    if not sidecar.exists():
        pytest.skip("this model has no export.json")
    model = _model_copy(proof_model, tmp_path, with_metadata=True)
    shutil.copy2(request.getfixturevalue("notebook_export"), model)  # another model, same name
    assert json.loads(sidecar.read_text())["sha256"]
    code, output = run_to_exit(model, timeout=120)
    _assert_one_clear_line(code, output, "sha256")


def test_model_that_is_not_a_pickle(tmp_path):
    model = tmp_path / "export.pkl"
    model.write_bytes(b"<html>404 Not Found</html>\n")  # a failed download saved as the model
    code, output = run_to_exit(model, timeout=120)
    _assert_one_clear_line(code, output, "export.pkl")


# ---------------------------------------------------------------- training killed mid-run
# SIGTERM/Ctrl-C then --resume is tests/training/test_cli.py's; these cover SIGKILL, which no
# handler can catch (the OOM killer, `docker kill`, a preempted machine).
def _start_training(data: Path, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "training.train", str(data), *FAST,
                             "--out", str(out), *extra], cwd=ROOT, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _sigkill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.005)
        assert proc.poll() is None, "training finished before it could be killed"
        assert ready(), "the moment to kill never came"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _pair_consistent(out: Path) -> bool:
    """export.pkl and export.json describe each other (the app would start on them)."""
    meta = json.loads(out.with_suffix(".json").read_text())
    return meta["sha256"] == sha256_file(out)


@pytest.fixture
def training_data(tmp_path):
    return make_image_folder(tmp_path / "data", per_class=6)


def test_sigkill_mid_training_leaves_no_export_and_resume_continues(training_data, tmp_path):
    models = tmp_path / "models"
    out = models / "export.pkl"
    log = tmp_path / "train.log"
    proc = _start_training(training_data, out, log, "--epochs", "6")
    _sigkill_when(proc, lambda: re.search(r"^2/\d+ ", log.read_text(errors="replace"), re.M))
    assert not out.exists() and not out.with_suffix(".json").exists(), "a partial export"
    assert not models.exists() or leftovers(models) == [], leftovers(models)

    resumed = run_training(training_data, *FAST, "--epochs", "6", "--out", out, "--resume")
    assert resumed.returncode == 0, (
        "--resume could not continue a run killed with SIGKILL after 2 epochs:\n"
        + (resumed.stdout + resumed.stderr)[-1500:])
    served = served_model_path(out)  # the first version goes live
    meta = json.loads(served.with_suffix(".json").read_text())
    assert meta["training"]["resumed"] is True and _pair_consistent(served)
    assert [h["epoch"] for h in meta["history"]][-1] == 6
    assert leftovers(models) == [], leftovers(models)


def test_sigkill_during_export_keeps_a_servable_pair_and_the_next_run_cleans_up(
        training_data, proof_model, tmp_path):
    """Killed while the export is being written: export.pkl/export.json are still a matching
    pair (the old one here), and the next run leaves no stale temporary files behind."""
    if not proof_model.with_suffix(".json").exists():
        pytest.skip("this model has no export.json")
    models = tmp_path / "models"
    models.mkdir()
    out = models / "export.pkl"
    shutil.copy2(proof_model, out)
    shutil.copy2(proof_model.with_suffix(".json"), out.with_suffix(".json"))
    log = tmp_path / "train.log"
    proc = _start_training(training_data, out, log, "--epochs", "1")
    # Killed while a temporary file or the version's staging folder exists.
    _sigkill_when(proc, lambda: any(p.name.endswith(".tmp") for p in models.rglob("*")))
    assert _pair_consistent(out), "export.pkl and export.json no longer match after SIGKILL"

    again = run_training(training_data, *FAST, "--epochs", "1", "--out", out)
    assert again.returncode == 0, (again.stdout + again.stderr)[-1500:]
    assert _pair_consistent(out)
    assert leftovers(models) == [], f"stale temporary files from the killed run: {leftovers(models)}"
