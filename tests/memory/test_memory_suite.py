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

Each case in CASES is sent (its clients at once): every amplification file, then many large
bodies at once (16 uploads and 4 JSON bodies of 40 MB, as the issue measured them, and the
same at the server's own MAX_UPLOAD_MB, which BODY_BUDGET_MB must then hold). Then: every request answered (a 4xx,
429, 503 or 200) within 60 s, no OOM kill, the same worker processes, and a normal photo
answered 200. The cgroup's peak memory for each case is printed. Where a memory cgroup
cannot be made the suite fails: it is the only proof of these bounds.

The model is the session's tiny one (tests/conftest.py `trained_model`: 32 px), so a
photo is decoded down to 64 px rather than the 448 px of resnet18 at 224; the decoded
full-size image, which dominates each peak, is the same.
"""
from __future__ import annotations

import base64
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

from app import machine as sizing
from classifier.images import DEFAULT_MAX_IMAGE_PIXELS
from harness import ROOT, cgroup
from harness.decode_attacks import ATTACKS
from harness.images import image_bytes
from harness.raw_http import http_request, raw_upload, send, upload
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
    """Requests sent at once: `clients` copies of the raw HTTP request that `request(max_upload)`
    builds (`max_upload`: the server's MAX_UPLOAD_MB in bytes)."""
    name: str
    request: Callable[[int], bytes]
    clients: int = 1


def file_upload(name: str, build: Callable[[], bytes]) -> Case:
    return Case(name, lambda _max_upload: upload("/predict", build(), f"{name}.bin"))


def padded_photo(size: int) -> bytes:
    """A photo of `size` bytes: a JPEG with zeros after its end, which decoders ignore."""
    jpeg = image_bytes("JPEG", (640, 480))
    return jpeg + bytes(size - len(jpeg))


def json_body(size: int) -> bytes:
    body = b'{"image": "' + base64.b64encode(padded_photo(size)) + b'"}'
    return raw_upload(body, "application/json")


# One entry per case: every amplification file of harness.decode_attacks, one at a time;
# then large bodies at once, of 40 MB and at the server's limit (a JSON body's image at
# half of it: JSON counts 2.1 times in the body budget, which is twice MAX_UPLOAD_MB).
CASES = [file_upload(name, build) for name, build in ATTACKS.items()] + [
    Case("uploads_16x40mb", lambda _: upload("/predict", padded_photo(40 * 2**20), "big.jpg"), 16),
    Case("json_4x40mb", lambda _: json_body(40 * 2**20), 4),
    Case("uploads_16_at_limit",
         lambda limit: upload("/predict", padded_photo(limit - 2**16), "big.jpg"), 16),
    Case("json_4_at_half_limit", lambda limit: json_body(limit // 2), 4),
]
PHOTO = upload("/predict", image_bytes("JPEG", (640, 480)), "photo.jpg")


@dataclass
class Machine:
    server: GunicornServer
    group: Path
    idle: int
    max_upload: int  # the server's MAX_UPLOAD_MB, in bytes, as it derives it from its limit


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
    # what the server derives from its cgroup's limit on its one CPU (app/machine.py)
    budget = sizing.body_budget(limit, "lean" if request.param == "lean" else "torch", 1,
                                model.stat().st_size, DEFAULT_MAX_IMAGE_PIXELS)
    max_upload = int(sizing.default_max_upload(budget) * MB)
    try:
        server.wait_ready()
        answer(server, PHOTO)
        idle = cgroup.usage_bytes(group)
        runtime = json.loads(send(server.port, http_request("GET", "/model")).body)["runtime"]
        print(f"\n{request.param}: idle {idle / MB:.0f} MB in the cgroup, limit "
              f"{limit / MB:.0f} MB, runtime {runtime}, workers {server.worker_pids()}, "
              f"body budget {budget / MB:.0f} MB, MAX_UPLOAD_MB {max_upload / MB:g}")
        yield Machine(server, group, idle, max_upload)
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
    raw = case.request(machine.max_upload)
    kills_before = cgroup.oom_kills(group)
    cgroup.reset_peak(group)
    with ThreadPoolExecutor(case.clients) as pool:
        outs = list(pool.map(lambda _: send(server.port, raw, timeout=ANSWER_WITHIN),
                             range(case.clients)))
    peak = cgroup.peak_bytes(group)
    statuses = {status: [out.status for out in outs].count(status)
                for status in sorted({out.status for out in outs}, key=str)}
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
