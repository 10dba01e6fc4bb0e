"""What the shipped configuration files say: gunicorn.conf.py's settings under an environment,
and fly.toml, so tests and benchmarks hold the product to what is deployed."""
from __future__ import annotations

import os
import runpy
import tomllib

from harness import ROOT


def gunicorn_settings(env: dict) -> dict:
    """The settings gunicorn.conf.py produces under `env` (timeout, workers, threads, ...)."""
    from app import serve_preloaded

    saved = dict(os.environ)
    try:
        os.environ.update(env)
        values = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        serve_preloaded(None)  # this process is no gunicorn master: its next create_app() loads
    return {k: v for k, v in values.items() if not k.startswith("_") and not callable(v)}


def fly_config() -> dict:
    return tomllib.loads((ROOT / "fly.toml").read_text())


def fly_env() -> dict[str, str]:
    """The [env] that fly.toml ships, less PORT and MODEL_PATH (a local server sets its own)."""
    return {k: str(v) for k, v in fly_config()["env"].items() if k not in ("PORT", "MODEL_PATH")}
