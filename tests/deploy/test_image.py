"""The real image, built from the Dockerfile and run: both targets serve as a non-root user.

Builds with docker or buildah (harness/containers.py says how it runs without a daemon),
bakes in the session's tiny trained model, runs the image's own CMD on a free port and
checks /readyz, /predict, /model, the HEALTHCHECK command and the server's uid. Image size
and time to ready are printed (pytest -s, or the -ra summary on failure).
"""
from __future__ import annotations

import io
import shutil

import psutil
import pytest
import requests
from PIL import Image

from harness.containers import (
    FIRST_BUILD_GB,
    Container,
    build,
    build_context,
    find_engine,
    free_build_space,
    stop,
    wait_ready,
)
from harness.containers import Image as BuiltImage
from harness.servers import free_port

BUILD_TIMEOUT = 1800   # a first build downloads torch (CUDA wheels where the CPU index is unreachable)
# The first test to use the images waits for both builds: on a fresh machine (no layer
# cache) that took 12 min here, beyond the suite's 600 s per test.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(2 * BUILD_TIMEOUT + 600)]
READY_TIMEOUT = 180    # gunicorn's worker timeout (60 s) three times: generous for a busy 2-core box
TARGETS = ("default", "lean")
RUNTIME = {"default": "onnx", "lean": "onnx-lean"}  # INFERENCE_RUNTIME unset: auto
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
answers: dict[str, dict] = {}  # target -> colour -> probabilities, filled by the serving test


def png(colour, size=(57, 41)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def engine():
    name, why = find_engine()
    if name is None:
        pytest.skip(f"no container engine: {why}")
    space = free_build_space(name)
    if space is not None and space[0] < FIRST_BUILD_GB:
        pytest.skip(f"not enough free disk for the image builds: {space[0]:.1f} GB free at "
                    f"{space[1]}, and a first build of both targets needs {FIRST_BUILD_GB} GB")
    return name


@pytest.fixture(scope="module")
def images(engine, trained_model, tmp_path_factory):
    context = build_context(tmp_path_factory.mktemp("context") / "ctx", trained_model.parent)
    built = {}
    try:
        for target in TARGETS:
            tag = f"localhost/image-classifier-test:{target}"
            result = build(target, tag, context, BUILD_TIMEOUT)
            assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
            built[target] = BuiltImage(engine, tag)
        yield built
    finally:
        for image in built.values():
            image.remove()
        shutil.rmtree(context, ignore_errors=True)


def server_uids(container: Container, server) -> set[int]:
    """Real uids of the gunicorn processes the container runs."""
    if container.image.engine == "docker":
        status = container.run(["cat", "/proc/1/status"]).stdout
        return {int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:")}
    return {p.uids().real for p in psutil.Process(server.pid).children(recursive=True)
            if "gunicorn" in " ".join(p.cmdline())}


@pytest.mark.parametrize("target", TARGETS)
def test_image_serves_its_cmd_as_non_root(images, target):
    image = images[target]
    config = image.config()
    port = free_port()
    container = Container(image, {"PORT": str(port)})
    try:
        server = container.start(config["Cmd"])
        base = f"http://127.0.0.1:{port}"
        try:
            ready_s = wait_ready(base, server, READY_TIMEOUT)

            assert config["User"] == "app"
            uids = server_uids(container, server)
            assert uids and 0 not in uids and uids == {10001}, uids

            health = config["Healthcheck"]["Test"]
            check = ["sh", "-c", health[1]] if health[0] == "CMD-SHELL" else health[1:]
            assert container.run(check).returncode == 0

            model = requests.get(f"{base}/model", timeout=10).json()
            assert model["runtime"] == RUNTIME[target]
            answers[target] = {}
            for name, colour in COLOURS.items():
                reply = requests.post(f"{base}/predict", timeout=60,
                                      files={"file": (f"{name}.png", png(colour), "image/png")})
                assert reply.status_code == 200, reply.text
                answers[target][name] = reply.json()["probabilities"]
            bad = requests.post(f"{base}/predict", files={"file": ("x.png", b"not an image")},
                                timeout=30)
            assert bad.status_code == 400, bad.text
            report = requests.get(f"{base}/report", timeout=10)  # the image carries it
            assert report.status_code == 200 and "Training report" in report.text
        finally:
            log = stop(server)
        assert container.run(check, timeout=60).returncode != 0, "healthcheck passes with no server"
    finally:
        container.remove()
    assert "fontManager" not in log and "font cache" not in log, log[-2000:]
    if target == "default":  # serves the graph compiled and checked at build, torch behind it
        assert "its graph checked when compiled" in log, log[-2000:]
    print(f"\n{target} image: {image.size_bytes() / 1e6:,.0f} MB, ready in {ready_s:.1f} s")


def test_lean_answers_like_default(images):
    if set(answers) != set(TARGETS):
        pytest.skip("a serving test failed first")
    for name in COLOURS:
        default, lean = answers["default"][name], answers["lean"][name]
        assert default.keys() == lean.keys()
        assert max(abs(default[k] - lean[k]) for k in default) <= 1e-4, (name, default, lean)


def test_lean_image_has_no_torch_and_is_small(images):
    container = Container(images["lean"], {})
    try:
        probe = container.run(["python", "-c", "import importlib.util as u; "
                               "print(u.find_spec('torch'), u.find_spec('fastai'))"])
    finally:
        container.remove()
    assert probe.stdout.split() == ["None", "None"], probe.stdout + probe.stderr
    assert images["lean"].size_bytes() <= 500e6


def test_build_stops_clearly_without_a_model(engine, tmp_path, trained_model):
    context = build_context(tmp_path / "ctx", trained_model.parent)
    (context / "models" / "export.pkl").unlink()
    result = build("lean", "localhost/image-classifier-test:no-model", context, BUILD_TIMEOUT)
    BuiltImage(engine, "localhost/image-classifier-test:no-model").remove()
    assert result.returncode != 0
    assert "models/export.pkl is missing" in result.stdout + result.stderr
