"""Settings from environment variables (and create_app overrides), parsed and checked once.

Every knob the docs describe is read here, each with its default written once (in
`Settings`), so gunicorn.conf.py and the app agree on worker, thread and
inference-thread counts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from classifier.images import (
    DEFAULT_MAX_DECLARED_PIXELS,
    DEFAULT_MAX_IMAGE_PIXELS,
    exact_decode_requested,
)

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


class ConfigError(RuntimeError):
    """A setting has a value we cannot use; the message names it (one line)."""


def cpu_count() -> int:
    """CPUs this process may run on (a container's cpuset, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_workers(cpus: int) -> int:
    """One worker per core (at most 4), each running the network on every core.

    Measured on 2 idle cores (docs/measurements.md, "Workers and inference threads"):
    2 workers x 2 threads answers a lone request as fast as 1 x 2 (the network on both
    cores) and keeps the throughput of 2 x 1 under load; 1 x 2 lost a fifth of it there.
    """
    return max(1, min(cpus, 4))


RUNTIMES = ("auto", "onnx", "torch")


# Peak memory (PSS without CUDA library pages, all server processes, 8 clients, resnet18
# at 224 px, onnxruntime) measured with 1 and 2 workers by benchmarks/deploy_footprint.py,
# rounded up (docs/deploy.md "Measured"): what the master and its first worker take, and
# what each further worker adds, for the default ("torch") and the lean image.
SERVER_MB = {"torch": 1070, "lean": 280}
EXTRA_WORKER_MB = {"torch": 230, "lean": 175}
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
    a third less (a 1 GB machine: docs/deploy.md "Measured")."""
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
    workers: int = 1  # from load_settings: default_workers(CPUs)
    threads: int = 8
    inference_threads: int = 1  # from load_settings: the CPU count
    runtime: str = "auto"  # from load_settings: default_runtime(memory limit, image)
    # A 108 MP phone JPEG is 20-35 MB; 200 MP ones reach about 50 MB.
    max_upload_mb: float = 40.0
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # pixels decoded (see classifier/images.py)
    max_declared_pixels: int = DEFAULT_MAX_DECLARED_PIXELS  # pixels a header may claim
    exact_decode: bool = False  # decode uploads at full size, not at the size the model needs
    max_batch: int = 32
    api_key: str | None = None
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    read_timeout: float = 10.0
    unsure_threshold: float | None = None  # None: the model's own (export.json), if any
    explanations: bool = True  # False: no Grad-CAM; with onnxruntime, PyTorch weights freed
    # Slow-client bounds (app/worker.py, app/upload_deadline.py; docs/reliability.md).
    header_timeout: int = 10
    min_upload_kbps: float = 20.0
    max_connections: int = 1000
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


# The environment variables read here, by the Settings field each sets
# (create_app's config accepts the same names).
ENV_FIELDS = {"MODEL_PATH": "model_path", "PORT": "port", "WEB_CONCURRENCY": "workers",
              "THREADS": "threads", "INFERENCE_THREADS": "inference_threads",
              "INFERENCE_RUNTIME": "runtime", "MAX_UPLOAD_MB": "max_upload_mb",
              "MAX_IMAGE_PIXELS": "max_image_pixels", "MAX_BATCH": "max_batch",
              "API_KEY": "api_key", "CORS_ORIGINS": "cors_origins",
              "READ_TIMEOUT": "read_timeout", "UNSURE_THRESHOLD": "unsure_threshold",
              "EXPLANATIONS": "explanations", "MAX_DECLARED_PIXELS": "max_declared_pixels",
              "EXACT_DECODE": "exact_decode", "HEADER_TIMEOUT": "header_timeout",
              "MIN_UPLOAD_KBPS": "min_upload_kbps", "MAX_CONNECTIONS": "max_connections",
              "ALLOW_URL_FETCH": "allow_url_fetch",
              "ALLOW_URL_FETCH_LOOPBACK": "allow_url_fetch_loopback",
              "FEEDBACK_DIR": "feedback_dir"}
ENV_NAMES = tuple(ENV_FIELDS)


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


def _fraction(name: str, raw) -> float | None:
    if raw is None:
        return None
    try:
        value = float(str(raw).strip())
    except ValueError:
        value = None
    if value is None or not 0 <= value <= 1:
        raise ConfigError(f"{name} must be a number from 0 to 1, not {raw!r}.")
    return value


def _switch(name: str, raw) -> bool:
    value = str(raw).strip().lower()
    if value not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ConfigError(f"{name} must be on or off, not {raw!r}.")
    return value in ("1", "true", "yes", "on")


def load_settings(environ=None, overrides=None) -> Settings:
    """Settings from `environ` (default os.environ), then `overrides` (same names) on top."""
    source = dict(os.environ if environ is None else environ)
    source.update({k: v for k, v in (overrides or {}).items() if v is not None})

    def given(name):
        value = source.get(name)
        return None if value is None or str(value).strip() == "" else value

    def get(name):
        """The variable's value, or its Settings default when it is unset or blank."""
        value = given(name)
        return getattr(Settings, ENV_FIELDS[name]) if value is None else value

    cpus = cpu_count()
    workers = _int("WEB_CONCURRENCY", given("WEB_CONCURRENCY") or memory_capped_workers(
        default_workers(cpus), memory_limit(), installed_image()))
    inference_threads = _int("INFERENCE_THREADS", given("INFERENCE_THREADS") or cpus)
    runtime = str(given("INFERENCE_RUNTIME")
                  or default_runtime(memory_limit(), installed_image())).lower()
    if runtime not in RUNTIMES:
        raise ConfigError(f"INFERENCE_RUNTIME must be auto, onnx or torch, not {runtime!r}.")
    model_path = Path(get("MODEL_PATH"))
    if not model_path.is_absolute():
        model_path = Path.cwd() / model_path
    feedback_dir = given("FEEDBACK_DIR")
    if feedback_dir is not None:
        feedback_dir = Path(feedback_dir)
        feedback_dir = feedback_dir if feedback_dir.is_absolute() else Path.cwd() / feedback_dir
    origins = given("CORS_ORIGINS") or ""
    if isinstance(origins, str):
        origins = origins.split(",")
    return Settings(
        model_path=model_path,
        port=_int("PORT", get("PORT")),
        workers=workers,
        threads=_int("THREADS", get("THREADS")),
        inference_threads=inference_threads,
        runtime=runtime,
        max_upload_mb=_float("MAX_UPLOAD_MB", get("MAX_UPLOAD_MB")),
        max_image_pixels=_int("MAX_IMAGE_PIXELS", get("MAX_IMAGE_PIXELS")),
        max_declared_pixels=_int("MAX_DECLARED_PIXELS", get("MAX_DECLARED_PIXELS")),
        exact_decode=exact_decode_requested({"EXACT_DECODE": given("EXACT_DECODE") or ""}),
        max_batch=_int("MAX_BATCH", get("MAX_BATCH")),
        api_key=given("API_KEY"),
        cors_origins=tuple(o.strip().rstrip("/") for o in origins if o.strip()),
        read_timeout=_float("READ_TIMEOUT", get("READ_TIMEOUT")),
        unsure_threshold=_fraction("UNSURE_THRESHOLD", given("UNSURE_THRESHOLD")),
        explanations=_switch("EXPLANATIONS", get("EXPLANATIONS")),
        header_timeout=_int("HEADER_TIMEOUT", get("HEADER_TIMEOUT")),
        min_upload_kbps=_float("MIN_UPLOAD_KBPS", get("MIN_UPLOAD_KBPS")),
        max_connections=_int("MAX_CONNECTIONS", get("MAX_CONNECTIONS")),
        allow_url_fetch=_switch("ALLOW_URL_FETCH", get("ALLOW_URL_FETCH")),
        allow_url_fetch_loopback=_switch("ALLOW_URL_FETCH_LOOPBACK",
                                         get("ALLOW_URL_FETCH_LOOPBACK")),
        feedback_dir=feedback_dir,
    )
