"""Settings from environment variables (and create_app overrides), parsed and checked once.

Every knob the README documents is read here, so gunicorn.conf.py and the app
agree on worker, thread and inference-thread counts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from classifier.images import DEFAULT_MAX_IMAGE_PIXELS

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


# The environment variables read here (create_app's config accepts the same names).
ENV_NAMES = ("MODEL_PATH", "PORT", "WEB_CONCURRENCY", "THREADS", "INFERENCE_THREADS",
             "INFERENCE_RUNTIME", "MAX_UPLOAD_MB", "MAX_IMAGE_PIXELS", "MAX_BATCH", "API_KEY",
             "CORS_ORIGINS", "READ_TIMEOUT", "ALLOW_URL_FETCH", "ALLOW_URL_FETCH_LOOPBACK",
             "FEEDBACK_DIR")


class ConfigError(RuntimeError):
    """A setting has a value we cannot use; the message names it (one line)."""


def cpu_count() -> int:
    """CPUs this process may run on (a container's cpuset, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_workers(cpus: int) -> int:
    # One process per core runs the network single-threaded, which measured
    # fastest on 2 cores (README.md "Serving"); more processes only cost memory.
    return max(1, min(cpus, 4))


@dataclass(frozen=True)
class Settings:
    model_path: Path = ROOT / "models" / "export.pkl"
    port: int = 8000
    workers: int = 1
    threads: int = 8
    inference_threads: int = 1
    runtime: str = "auto"
    max_upload_mb: float = 10.0
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_batch: int = 32
    api_key: str | None = None
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    read_timeout: float = 10.0
    # {"url": ...} on /predict makes the server fetch it (app/url_fetch.py): off by default.
    allow_url_fetch: bool = False
    # Lets URL fetching reach 127.0.0.0/8 and ::1 only; exists for the tests' local server.
    allow_url_fetch_loopback: bool = False
    # Where POST /feedback keeps corrected images (<label>/<sha256>.<ext>); None: off.
    feedback_dir: Path | None = None

    @property
    def max_content_length(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def examples_dir(self) -> Path:
        return self.model_path.parent / "examples"


def _int(name: str, raw, minimum: int = 1) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}.") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}.")
    return value


def _float(name: str, raw) -> float:
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}.") from None
    if not value > 0:
        raise ConfigError(f"{name} must be positive, not {raw!r}.")
    return value


def _flag(name: str, raw) -> bool:
    text = str(raw or "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 1/true/yes/on or 0/false/no/off, not {raw!r}.")


def load_settings(environ=None, overrides=None) -> Settings:
    """Settings from `environ` (default os.environ), then `overrides` (same names) on top."""
    source = dict(os.environ if environ is None else environ)
    source.update({k: v for k, v in (overrides or {}).items() if v is not None})

    def get(name):
        value = source.get(name)
        return None if value is None or str(value).strip() == "" else value

    cpus = cpu_count()
    workers = _int("WEB_CONCURRENCY", get("WEB_CONCURRENCY") or default_workers(cpus))
    inference_threads = _int("INFERENCE_THREADS",
                             get("INFERENCE_THREADS") or max(1, cpus // workers))
    runtime = str(get("INFERENCE_RUNTIME") or "auto").lower()
    if runtime not in ("auto", "onnx", "torch"):
        raise ConfigError(f"INFERENCE_RUNTIME must be auto, onnx or torch, not {runtime!r}.")
    model_path = Path(get("MODEL_PATH") or Settings.model_path)
    if not model_path.is_absolute():
        model_path = Path.cwd() / model_path
    feedback_dir = get("FEEDBACK_DIR")
    if feedback_dir is not None:
        feedback_dir = Path(feedback_dir)
        feedback_dir = feedback_dir if feedback_dir.is_absolute() else Path.cwd() / feedback_dir
    origins = get("CORS_ORIGINS") or ""
    if isinstance(origins, str):
        origins = origins.split(",")
    return Settings(
        model_path=model_path,
        port=_int("PORT", get("PORT") or 8000),
        workers=workers,
        threads=_int("THREADS", get("THREADS") or Settings.threads),
        inference_threads=inference_threads,
        runtime=runtime,
        max_upload_mb=_float("MAX_UPLOAD_MB", get("MAX_UPLOAD_MB") or 10),
        max_image_pixels=_int("MAX_IMAGE_PIXELS",
                              get("MAX_IMAGE_PIXELS") or DEFAULT_MAX_IMAGE_PIXELS),
        max_batch=_int("MAX_BATCH", get("MAX_BATCH") or 32),
        api_key=get("API_KEY"),
        cors_origins=tuple(o.strip().rstrip("/") for o in origins if o.strip()),
        read_timeout=_float("READ_TIMEOUT", get("READ_TIMEOUT") or Settings.read_timeout),
        allow_url_fetch=_flag("ALLOW_URL_FETCH", get("ALLOW_URL_FETCH")),
        allow_url_fetch_loopback=_flag("ALLOW_URL_FETCH_LOOPBACK",
                                       get("ALLOW_URL_FETCH_LOOPBACK")),
        feedback_dir=feedback_dir,
    )
