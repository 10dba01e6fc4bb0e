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
             "CORS_ORIGINS", "READ_TIMEOUT")


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


# Peak memory (PSS without CUDA library pages, all server processes, 8 clients, resnet18
# at 224 px, onnxruntime) measured with 1 and 2 workers by benchmarks/deploy_footprint.py,
# rounded up (docs/DEPLOY.md "Measured"): what the master and its first worker take, and
# what each further worker adds, for the default ("torch") and the lean image.
SERVER_MB = {"torch": 1070, "lean": 280}
EXTRA_WORKER_MB = {"torch": 230, "lean": 160}
MEMORY_HEADROOM = 0.85  # use at most this share of the limit: page cache and spikes need room


def memory_limit(cgroup_root: Path = Path("/sys/fs/cgroup"),
                 proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """Bytes this process's cgroup may use (a container's or fly machine's memory), or None.

    Reads cgroup v2's memory.max, else v1's memory.limit_in_bytes, for the group named in
    /proc/self/cgroup and, inside a container's own cgroup namespace, at the root.
    """
    try:
        groups = dict(line.split(":", 2)[1:] for line in proc_cgroup.read_text().splitlines())
    except (OSError, ValueError):
        groups = {}
    candidates = [cgroup_root / groups.get("", "/").lstrip("/") / "memory.max",
                  cgroup_root / "memory.max"]
    v1 = next((path for names, path in groups.items() if "memory" in names.split(",")), "/")
    candidates += [cgroup_root / "memory" / v1.lstrip("/") / "memory.limit_in_bytes",
                   cgroup_root / "memory" / "memory.limit_in_bytes"]
    for path in candidates:
        try:
            raw = path.read_text().strip()
        except OSError:
            continue
        if raw == "max":
            return None
        value = int(raw)
        return value if value < 1 << 50 else None  # v1 says "unlimited" with a huge number
    return None


def memory_capped_workers(workers: int, limit: int | None, image: str) -> int:
    """At most as many workers as fit in `limit` bytes for this image ("torch" or "lean")."""
    if limit is None:
        return workers
    room = limit * MEMORY_HEADROOM / MB - SERVER_MB[image]
    return max(1, min(workers, 1 + int(room // EXTRA_WORKER_MB[image])))


def default_runtime(limit: int | None, image: str) -> str:
    """INFERENCE_RUNTIME when unset: "auto" (onnxruntime, about 2x faster per image) where
    one worker of this image fits the memory limit with it, else "torch", which needs about
    a third less (a 1 GB machine: docs/DEPLOY.md "Measured")."""
    if image == "torch" and limit is not None and limit * MEMORY_HEADROOM / MB < SERVER_MB[image]:
        return "torch"
    return "auto"


def installed_image() -> str:
    """ "lean" where torch is not installed (the lean image), else "torch"."""
    import importlib.util

    return "torch" if importlib.util.find_spec("torch") else "lean"


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


def load_settings(environ=None, overrides=None) -> Settings:
    """Settings from `environ` (default os.environ), then `overrides` (same names) on top."""
    source = dict(os.environ if environ is None else environ)
    source.update({k: v for k, v in (overrides or {}).items() if v is not None})

    def get(name):
        value = source.get(name)
        return None if value is None or str(value).strip() == "" else value

    cpus = cpu_count()
    workers = _int("WEB_CONCURRENCY", get("WEB_CONCURRENCY") or memory_capped_workers(
        default_workers(cpus), memory_limit(), installed_image()))
    inference_threads = _int("INFERENCE_THREADS",
                             get("INFERENCE_THREADS") or max(1, cpus // workers))
    runtime = str(get("INFERENCE_RUNTIME")
                  or default_runtime(memory_limit(), installed_image())).lower()
    if runtime not in ("auto", "onnx", "torch"):
        raise ConfigError(f"INFERENCE_RUNTIME must be auto, onnx or torch, not {runtime!r}.")
    model_path = Path(get("MODEL_PATH") or Settings.model_path)
    if not model_path.is_absolute():
        model_path = Path.cwd() / model_path
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
    )
