"""Run the image's own CMD with its own ENV from a directory laid out as the image is.

Only what the Dockerfile copies is there, so a forgotten COPY (or a pickled
function living in a module the image lacks) fails here, without Docker.
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.deploy.container import lay_out_image, parse_dockerfile


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory, trained_model):
    dockerfile = parse_dockerfile()
    dest = lay_out_image(dockerfile, tmp_path_factory.mktemp("image") / "srv", trained_model.parent)
    return dockerfile, dest


def test_image_layout_has_nothing_from_the_dev_tree(image_dir):
    _, dest = image_dir
    top = {p.name for p in dest.iterdir()}
    assert top == {"app", "classifier", "templates", "static", "gunicorn.conf.py", "models"}
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
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert server.poll() is None, f"server exited:\n{server.stdout.read()[-3000:]}"
            try:
                if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail("the container command never became ready")
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
