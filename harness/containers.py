"""Build and run the real image with docker or, where no daemon runs, buildah.

buildah needs no daemon: `buildah run` starts the image's CMD as the image's USER with its
ENV and WORKDIR, in a chroot of the image's filesystem that shares the host's network, so a
server inside listens on a host port. The image is built by scripts/build_image.sh, the
same script `make image` runs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.dockerfile import ROOT

# What the build context leaves out besides .dockerignore: the developer's own model
# (the test bakes its own in) and large local folders not worth copying.
NOT_COPIED = (".git", ".venv", "data", "models", "test-artifacts", ".pytest_cache",
              ".hypothesis", "__pycache__")


def find_engine() -> tuple[str | None, str]:
    """("docker" | "buildah" | None, why). Installs buildah with apt where neither is here."""
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True,
                                                 timeout=60).returncode == 0:
        return "docker", "docker daemon"
    if not shutil.which("buildah") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run("apt-get update -qq && apt-get install -y -qq buildah debootstrap",
                       shell=True, capture_output=True, env=env, timeout=900)
    if shutil.which("buildah"):
        return "buildah", "buildah"
    return None, "no docker daemon, and buildah is not installed and cannot be (needs root and apt)"


# A first build of both targets (no layer cache), measured with buildah: the CUDA torch venv
# is 6.7 GB, and committing it holds the working container, the layer's blob in /var/tmp
# and the new layer at once (docs/deploy.md#building-it-docker-or-buildah).
FIRST_BUILD_GB = 25  # 22.9 GB measured, and room for the test session's own files


def free_build_space(engine: str) -> tuple[float, str] | None:
    """(GB free, where) on whichever disk a buildah build writes to has less free (its storage or
    the temporary directory of its blobs); None for docker, whose daemon's disk is its own."""
    if engine != "buildah":
        return None
    info = json.loads(subprocess.run(["buildah", "info"], capture_output=True, text=True,
                                     check=True, timeout=60).stdout)
    places = [Path(info["store"]["GraphRoot"]), Path(os.environ.get("TMPDIR", "/var/tmp"))]
    free = []
    for place in places:
        while not place.exists():
            place = place.parent
        free.append((shutil.disk_usage(place).free / 1e9, str(place)))
    return min(free)


def build_context(dest: Path, models_dir: Path) -> Path:
    """The repository as a build context, with `models_dir` as its models/."""
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*NOT_COPIED), symlinks=True)
    shutil.copytree(models_dir, dest / "models",
                    ignore=shutil.ignore_patterns("checkpoints", "*.onnx", "*.onnx.json"))
    return dest


def build(target: str, tag: str, context: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["nice", "-n", "10", str(ROOT / "scripts" / "build_image.sh"), target, tag,
                           str(context)], capture_output=True, text=True, timeout=timeout)


@dataclass
class Image:
    engine: str
    tag: str

    def config(self) -> dict:
        """The image's Docker config: User, Env, Cmd, Healthcheck, WorkingDir, ExposedPorts."""
        if self.engine == "docker":
            out = subprocess.run(["docker", "image", "inspect", self.tag], capture_output=True,
                                 text=True, check=True).stdout
            return json.loads(out)[0]["Config"]
        out = subprocess.run(["buildah", "inspect", "--type", "image", self.tag],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)["Docker"]["config"]

    def size_bytes(self) -> int:
        if self.engine == "docker":
            out = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", self.tag],
                                 capture_output=True, text=True, check=True).stdout
            return int(out)
        out = subprocess.run(["buildah", "images", "--json", self.tag], capture_output=True,
                             text=True, check=True).stdout
        number, unit = json.loads(out)[0]["size"].split()  # e.g. "386 MB" (decimal units)
        return int(float(number) * 1000 ** ["B", "kB", "MB", "GB", "TB"].index(unit))

    def remove(self) -> None:
        subprocess.run([self.engine, "rmi", "-f", self.tag], capture_output=True)


class Container:
    """One container of `image`: start its CMD, run more commands beside it, remove it."""

    def __init__(self, image: Image, env: dict[str, str]):
        self.image, self.env = image, env
        self.name = None
        if image.engine == "buildah":
            self.name = subprocess.run(["buildah", "from", image.tag], capture_output=True,
                                       text=True, check=True).stdout.strip()

    def _env_flags(self) -> list[str]:
        return [flag for key, value in self.env.items() for flag in ("-e", f"{key}={value}")]

    def start(self, command: list[str]) -> subprocess.Popen:
        if self.image.engine == "docker":
            argv = ["docker", "run", "--rm", "--network", "host", *self._env_flags(),
                    "--name", f"classifier-test-{os.getpid()}", self.image.tag, *command]
            self.name = f"classifier-test-{os.getpid()}"
        else:
            argv = ["buildah", "run", "--isolation", "chroot", *self._env_flags(), self.name,
                    "--", *command]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def run(self, command: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        """`command` in the same image, as the image's user, beside the server."""
        if self.image.engine == "docker":
            argv = ["docker", "exec", self.name, *command]
        else:
            argv = ["buildah", "run", "--isolation", "chroot", *self._env_flags(), self.name,
                    "--", *command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def remove(self) -> None:
        if self.name:
            subprocess.run([self.image.engine, "rm", "-f", self.name] if self.image.engine == "docker"
                           else ["buildah", "rm", self.name], capture_output=True)


def wait_ready(base: str, process: subprocess.Popen, timeout: float) -> float:
    """Poll `base`/readyz until 200; seconds waited. Raises if `process` exits or time runs out."""
    import requests

    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n"
                               f"{process.stdout.read()[-3000:]}")
        try:
            if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - began
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or busy loading
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{base} was not ready within {timeout:.0f} s")


def stop(process: subprocess.Popen, timeout: float = 60) -> str:
    """Stop a started container command as `docker stop` does: SIGTERM to the server's
    master (gunicorn drains and stops its workers), SIGKILL to whatever is left after
    `timeout`. Returns the command's output."""
    import psutil

    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:  # the command has already ended: its output says why
        tree = []

    def is_gunicorn(p: psutil.Process | None) -> bool:
        if p is None:
            return False
        try:
            return "gunicorn" in " ".join(p.cmdline())
        except psutil.Error:
            return False

    masters = [p for p in tree if is_gunicorn(p) and not is_gunicorn(p.parent())]
    for proc in masters or [process]:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=timeout)
    for proc in alive:
        proc.kill()
    process.terminate()
    try:
        return process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[0]
