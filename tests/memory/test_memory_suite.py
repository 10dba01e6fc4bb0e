"""The real server in a machine-sized memory cgroup on one CPU, sent what used to kill it.

The README's command (`gunicorn -c gunicorn.conf.py "app:create_app()"`, through
harness.servers.GunicornServer) runs in a new memory cgroup, pinned to one CPU as fly's
smallest machines are:

- lean: torch, torchvision and fastai made unimportable (as in the lean image), serving
  the compiled ONNX graph, in 512 MB;
- default: the venv as it is (torch with CUDA wheels here), in its idle footprint with
  PyTorch (what it runs on fly's 1 GB machine), measured first in a cgroup with no limit,
  plus FLY_HEADROOM, what that machine leaves the default image; its runtime then follows
  that limit as on fly (docs/reliability.md has the figures).

Each case in CASES is sent (its clients at once), then: every request answered (a 4xx,
429, 503 or 200) within 60 s, no OOM kill, the same worker processes, and a normal photo
answered 200. The cgroup's peak memory for each case is printed. Where a memory cgroup
cannot be made the suite fails: it is the only proof of these bounds.

The model is the session's tiny one (tests/conftest.py `trained_model`: 32 px), so a
photo is decoded down to 64 px rather than the 448 px of resnet18 at 224; the decoded
full-size image, which dominates each peak, is the same.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import ROOT, cgroup
from harness.decode_attacks import ATTACKS
from harness.images import image_bytes
from harness.raw_http import http_request, send, upload
from harness.servers import GunicornServer

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

MB = 2**20
LEAN_LIMIT = 512 * MB
# fly's 1 GB machine less the default image's peak there with PyTorch (701 MB,
# docs/decisions.md "The container and fly.io"), rounded down.
FLY_HEADROOM = 320 * MB
ANSWER_WITHIN = 60.0
# torch and fastai are absent from the lean image: a sitecustomize makes them unimportable.
NO_TORCH = ('import sys\nfor name in ("torch", "torchvision", "fastai"):\n'
            '    sys.modules[name] = None\n')


@dataclass(frozen=True)
class Case:
    """Requests sent at once: `clients` copies of the raw HTTP request `request()` builds."""
    name: str
    request: Callable[[], bytes]
    clients: int = 1


def file_upload(name: str, build: Callable[[], bytes]) -> Case:
    return Case(name, lambda: upload("/predict", build(), f"{name}.bin"))


# One entry per case: every amplification file of harness.decode_attacks, one at a time.
CASES = [file_upload(name, build) for name, build in ATTACKS.items()]
PHOTO = upload("/predict", image_bytes("JPEG", (640, 480)), "photo.jpg")


@dataclass
class Machine:
    server: GunicornServer
    group: Path
    idle: int


def compiled_copy(trained_model: Path, folder: Path) -> Path:
    """The session's model copied and compiled to ONNX, as the lean image's build does."""
    models = folder / "models"
    shutil.copytree(trained_model.parent, models)
    result = subprocess.run([sys.executable, "-m", "classifier.onnx_compile",
                             str(models / "export.pkl")], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return models / "export.pkl"


def serve_in_group(model: Path, env: dict, name: str, limit: int | None) -> tuple:
    """The server started in a new memory cgroup of `limit` bytes, on one CPU."""
    group = cgroup.memory_cgroup(f"classifier-memory-{os.getpid()}-{name}", limit)
    if group is None:
        pytest.fail("cannot create a memory cgroup here (needs root and a writable cgroup "
                    "fs): the memory suite cannot prove its bounds without one")
    server = GunicornServer(model, env=env, ready_timeout=240)
    server.start(wait=False)
    # Before the master reads its settings (imports take far longer than these two
    # writes): it sizes its workers from this group's limit and this one CPU.
    (group / "cgroup.procs").write_text(str(server.proc.pid))
    os.sched_setaffinity(server.proc.pid, {max(os.sched_getaffinity(0))})
    return server, group


def idle_footprint(model: Path, env: dict) -> int:
    """Bytes the server's cgroup holds once it has answered one photo, with no limit."""
    server, group = serve_in_group(model, env, "idle", None)
    try:
        server.wait_ready()
        answer(server, PHOTO)
        return cgroup.usage_bytes(group)
    finally:
        server.stop()
        cgroup.remove(group)


@pytest.fixture(scope="module", params=["lean", "default"])
def machine(request, trained_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"memory-{request.param}")
    if request.param == "lean":
        (folder / "sitecustomize.py").write_text(NO_TORCH)
        model = compiled_copy(trained_model, folder)
        env, limit = {"PYTHONPATH": str(folder)}, LEAN_LIMIT
    else:  # its idle footprint with PyTorch (fly's 1 GB runs it) plus what 1 GB leaves
        model, env = trained_model, {}
        limit = idle_footprint(model, {"INFERENCE_RUNTIME": "torch"}) + FLY_HEADROOM
    server, group = serve_in_group(model, env, request.param, limit)
    try:
        server.wait_ready()
        answer(server, PHOTO)
        idle = cgroup.usage_bytes(group)
        runtime = json.loads(send(server.port, http_request("GET", "/model")).body)["runtime"]
        print(f"\n{request.param}: idle {idle / MB:.0f} MB in the cgroup, limit "
              f"{limit / MB:.0f} MB, runtime {runtime}, workers {server.worker_pids()}")
        yield Machine(server, group, idle)
    finally:
        server.stop()
        cgroup.remove(group)


def answer(server: GunicornServer, raw: bytes) -> None:
    out = send(server.port, raw, timeout=ANSWER_WITHIN)
    assert out.status == 200, (out.status, out.error, out.body[:300], server.log_tail())


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case_is_answered_within_memory(machine, case):
    server, group = machine.server, machine.group
    workers = server.worker_pids()
    raw = case.request()
    kills_before = cgroup.oom_kills(group)
    cgroup.reset_peak(group)
    with ThreadPoolExecutor(case.clients) as pool:
        outs = list(pool.map(lambda _: send(server.port, raw, timeout=ANSWER_WITHIN),
                             range(case.clients)))
    peak = cgroup.peak_bytes(group)
    statuses = sorted({out.status for out in outs}, key=str)
    slowest = max(out.seconds for out in outs)
    print(f"\n{case.name}: peak {peak / MB:.0f} MB (+{(peak - machine.idle) / MB:.0f} over idle), "
          f"slowest {slowest:.1f} s, answers {statuses}, limit hits {cgroup.limit_hits(group)}")
    for out in outs:
        assert out.status is not None and (out.status < 500 or out.status == 503), \
            (out.status, out.error, out.body[:300])
        assert out.seconds < ANSWER_WITHIN
    assert cgroup.oom_kills(group) == kills_before, server.log_tail()
    assert server.worker_pids() == workers, server.log_tail()  # none killed or replaced
    answer(server, PHOTO)
