"""The Dockerfile, .dockerignore and fly.toml agree with the code (no Docker engine needed)."""
from __future__ import annotations

import fnmatch
import importlib
import re
import subprocess
import sys
import tomllib

from harness.dockerfile import ROOT, dockerignore_patterns, parse_dockerfile
from harness.shipped_config import fly_config

DOCKERFILE = parse_dockerfile()
LEAN = parse_dockerfile(target="lean")
FLY = fly_config()
SERVE_COMMAND = ["gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"]


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_every_stage_starts_from_python_311_slim():
    assert DOCKERFILE.args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert DOCKERFILE.froms[0].split()[0] == "${PYTHON_IMAGE}"
    for index, line in enumerate(DOCKERFILE.froms[1:], start=1):
        assert line.split()[0] in DOCKERFILE.stages[:index], f"FROM {line}: not an earlier stage"


def test_torch_pins_match_requirements_and_default_to_the_cpu_index():
    # What the build installs is checked in the built image (test_image.py).
    pins = requirement_pins()
    assert DOCKERFILE.args["TORCH_VERSION"] == pins["torch"]
    assert DOCKERFILE.args["TORCHVISION_VERSION"] == pins["torchvision"]
    assert DOCKERFILE.args["TORCH_INDEX_URL"].rstrip("/").endswith("/whl/cpu")


def test_every_requirement_is_pinned():
    lines = [line.split("#")[0].strip()
             for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert all("==" in line for line in lines if line), "unpinned line in requirements.txt"


def test_ports_agree():
    port = int(DOCKERFILE.env["PORT"])
    assert port == 8080
    assert DOCKERFILE.expose == LEAN.expose == [port]
    assert FLY["http_service"]["internal_port"] == port
    assert int(FLY["env"]["PORT"]) == port


def test_cmd_is_the_documented_serve_command_and_resolves():
    assert DOCKERFILE.cmd == LEAN.cmd == SERVE_COMMAND
    assert "gunicorn -c gunicorn.conf.py \"app:create_app()\"" in (ROOT / "README.md").read_text()
    module_name, _, call = SERVE_COMMAND[-1].partition(":")
    factory = getattr(importlib.import_module(module_name), call.removesuffix("()"))
    assert callable(factory)
    assert (ROOT / SERVE_COMMAND[2]).is_file()


def test_model_path_agrees_with_the_app_default():
    from app.config import Settings  # noqa: PLC0415

    default = Settings.model_path.relative_to(ROOT).as_posix()
    assert DOCKERFILE.env["MODEL_PATH"] == FLY["env"]["MODEL_PATH"] == default


def test_every_copy_source_exists_and_is_not_ignored():
    ignored = dockerignore_patterns()
    for src, _ in DOCKERFILE.copies:
        assert (ROOT / src).exists(), f"COPY {src}: no such path in the repo"
        name = src.rstrip("/")
        assert not any(fnmatch.fnmatch(name, p.rstrip("/")) for p in ignored), \
            f"COPY {src} is excluded by .dockerignore"


def test_image_holds_what_the_app_imports_at_run_time():
    # The lean target takes models/ from the stage that compiles them (--from=compiled).
    served = {"app", "classifier", "templates", "static", "gunicorn.conf.py"}
    for stage in (DOCKERFILE, LEAN):
        app_copies = [(s, t) for s, t in stage.copies if not t.startswith("/")]
        assert served <= {src.rstrip("/") for src, _ in app_copies}
        assert stage.workdir == "/srv" and all(t.rstrip("/") == s.rstrip("/") for s, t in app_copies)
    assert "models" in {src.rstrip("/") for src, _ in DOCKERFILE.copies}


def test_few_layers_above_the_torch_venv():
    """With buildah's vfs storage (no overlayfs, as on CI here) every build step copies the
    filesystem below it twice (working container and committed layer), 6.7 GB above the
    CUDA torch venv: a fresh build with 13 such steps ran out of 56 GB of disk. The app's
    files with the model, and the compile step: 2."""
    names = [name for name, _ in DOCKERFILE.chain]
    assert "torch-venv" in names, names
    above = DOCKERFILE.chain[:names.index("torch-venv")]
    assert sum(layers for _, layers in above) <= 2, above


def test_runs_as_non_root_with_a_healthcheck_on_healthz():
    # The built image's uid and its HEALTHCHECK are checked by running it (test_image.py).
    assert DOCKERFILE.user == LEAN.user != "root"
    assert "/healthz" in DOCKERFILE.healthcheck


def test_health_paths_are_real_routes(trained_model):
    from app import create_app  # noqa: PLC0415

    rules = {rule.rule for rule in create_app({"MODEL_PATH": trained_model}).url_map.iter_rules()}
    assert "/healthz" in rules
    for check in FLY["http_service"]["checks"]:
        assert check["path"] in rules


def test_dockerignore_keeps_dev_files_out():
    ignored = dockerignore_patterns()
    for must in (".venv", "data/", "tests/", ".git", "models/checkpoints/", "**/__pycache__"):
        assert must in ignored, f".dockerignore should exclude {must}"
    assert not any(p.startswith("models/report") for p in ignored), \
        "the image carries the training report: GET /report serves it"


def test_fly_service_settings():
    service = FLY["http_service"]
    assert service["force_https"] is True
    assert service["auto_start_machines"] is True and service["auto_stop_machines"] in ("stop", True)
    assert service["min_machines_running"] == 0
    assert service["concurrency"]["type"] == "requests"
    assert 0 < service["concurrency"]["soft_limit"] <= service["concurrency"]["hard_limit"]
    grace = service["checks"][0]["grace_period"]
    assert int(grace.rstrip("s")) >= 20, "grace period must cover model load (see docs/deploy.md)"
    vm = FLY["vm"][0]
    assert vm["memory"] == "1gb" and vm["cpu_kind"] == "shared"
    # Served with these values, on a machine of this size, in test_container_smoke.py.
    assert {"PORT", "MODEL_PATH"} <= set(FLY["env"])


def test_fly_build_target_switches_to_lean_in_one_line():
    lines = [line.strip() for line in (ROOT / "fly.toml").read_text().splitlines()]
    switch = next(line for line in lines if "build-target" in line)
    enabled = tomllib.loads("[build]\n" + switch.lstrip("# "))
    assert enabled["build"]["build-target"] == "lean" and "lean" in LEAN.stages
    assert "build-target" not in FLY["build"], "the default target ships; lean is opt-in"


FIND_PROJECT_MODULES = """
import sys, warnings
warnings.simplefilter("ignore")
from fastai.learner import load_learner
before = set(sys.modules)
load_learner(sys.argv[1], cpu=True)
for name in sorted(set(sys.modules) - before):
    path = getattr(sys.modules[name], "__file__", None) or ""
    if path.startswith(sys.argv[2]) and "site-packages" not in path:
        print(name.split(".")[0])
"""


def test_modules_the_pickled_learner_references_are_in_the_image(trained_model):
    """Load export.pkl in a fresh interpreter and list the project modules unpickling imports.

    The load itself proves nothing lives in __main__ or is a lambda.
    """
    result = subprocess.run([sys.executable, "-c", FIND_PROJECT_MODULES, str(trained_model),
                             str(ROOT)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    needed = set(result.stdout.split())
    assert needed == {"classifier"}, needed  # never training/: a model must load without it
    copied = {src.rstrip("/") for src, _ in DOCKERFILE.copies}
    assert needed <= copied
