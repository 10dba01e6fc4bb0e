"""Run the image's own CMD with its own ENV from a directory laid out as the image is.

Only what the Dockerfile copies is there, so a forgotten COPY (or a pickled
function living in a module the image lacks) fails here, without Docker.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
from PIL import Image

from harness.cgroup import memory_cgroup, oom_kills, remove
from harness.containers import wait_ready
from harness.dockerfile import lay_out_image, parse_dockerfile
from harness.servers import free_port
from harness.shipped_config import fly_config


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory, trained_model):
    dockerfile = parse_dockerfile()
    dest = lay_out_image(dockerfile, tmp_path_factory.mktemp("image") / "srv", trained_model.parent)
    return dockerfile, dest


def test_image_layout_has_nothing_from_the_dev_tree(image_dir):
    _, dest = image_dir
    top = {p.name for p in dest.iterdir()}
    # training/: promote and rollback through `fly ssh console` (docs/deploy.md#updating-the-model)
    assert top == {"app", "classifier", "templates", "static", "gunicorn.conf.py", "models", "training"}
    assert (dest / "models" / "export.pkl").is_file()


def test_cmd_serves_readyz_and_predict(image_dir, tmp_path):
    dockerfile, dest = image_dir
    port = free_port()
    env = {k: v for k, v in dockerfile.env.items() if k != "PATH"}
    # The image's PATH puts its venv first; ours plays that part. Nothing else leaks in:
    # no PYTHONPATH, and the working directory holds only what the image holds.
    env.update(PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin", PORT=str(port),
               HOME=str(tmp_path), WEB_CONCURRENCY="1", THREADS="2")
    command = list(dockerfile.cmd)
    command[0] = shutil.which(command[0], path=env["PATH"])
    server = subprocess.Popen(command, cwd=dest, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, server, 90)
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
        buf = io.BytesIO()
        Image.new("RGB", (40, 40), (220, 30, 30)).save(buf, "PNG")
        reply = requests.post(f"{base}/predict", files={"file": ("red.png", buf.getvalue(), "image/png")},
                              timeout=30)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert set(body["probabilities"]) == {"red", "green", "blue"}
        assert abs(sum(body["probabilities"].values()) - 1) < 1e-5
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output[-3000:]


FLY_VM = fly_config()["vm"][0]
GB = 1024 ** 3


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("cpus, memory, workers, runtime", [
    (FLY_VM["cpus"], int(FLY_VM["memory"].removesuffix("gb")) * GB, 1, "torch"),  # fly's machine
    (2, 1 * GB, 1, "torch"),  # docker run --cpus 2 -m 1g: two cores, memory for one torch worker
    (2, 3 * GB, 2, "onnx"),   # room for onnxruntime and a worker per core
], ids=["fly-vm", "2-cores-1gb", "2-cores-3gb"])
def test_fly_env_serves_on_a_machine_of_that_size(image_dir, tmp_path, cpus, memory, workers,
                                                  runtime):
    """fly.toml's [env], served in a cgroup with the machine's memory and on its CPU count:
    the worker count and the runtime follow from the machine, and 8 clients get answers
    without an out-of-memory kill."""
    if len(os.sched_getaffinity(0)) < cpus:
        pytest.skip(f"needs {cpus} CPUs")
    dockerfile, dest = image_dir
    group = memory_cgroup(f"classifier-test-{os.getpid()}-{cpus}", memory)
    if group is None:
        pytest.skip("cannot create a memory cgroup here (needs root and a writable cgroup fs)")
    port = free_port()
    env = {k: v for k, v in dockerfile.env.items() if k != "PATH"}
    env.update(fly_config()["env"])
    env.update(PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin", PORT=str(port), HOME=str(tmp_path))
    cores = sorted(os.sched_getaffinity(0))[:cpus]

    def enter_machine():
        (group / "cgroup.procs").write_text(str(os.getpid()))
        os.sched_setaffinity(0, cores)

    command = list(dockerfile.cmd)
    command[0] = shutil.which(command[0], path=env["PATH"])
    server = subprocess.Popen(command, cwd=dest, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, preexec_fn=enter_machine)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server, 180)
        assert len(psutil.Process(server.pid).children()) == workers
        assert requests.get(f"{base}/model", timeout=10).json()["runtime"] == runtime
        buf = io.BytesIO()
        Image.new("RGB", (640, 480), (220, 30, 30)).save(buf, "JPEG")
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda _: requests.post(
                f"{base}/predict", files={"file": ("red.jpg", buf.getvalue(), "image/jpeg")},
                timeout=120).status_code, range(32)))
        assert replies == [200] * 32
        assert oom_kills(group) == 0
    finally:
        stop_and_show(server)
        remove(group)


def stop_and_show(server: subprocess.Popen, grace: float = 60) -> None:
    """SIGTERM, as fly sends at a stop; a server still up `grace` s later is killed and
    the test fails with its log (a hang at shutdown, or what went wrong before it)."""
    server.terminate()
    try:
        server.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        server.kill()
        try:
            output = server.communicate(timeout=10)[0][-4000:]
        except subprocess.TimeoutExpired:  # a process the server started holds its log pipe
            output = "(its log pipe is still held by a process that outlived it)"
        pytest.fail(f"gunicorn did not stop within {grace:.0f} s of SIGTERM; its log ends:\n"
                    f"{output}")
