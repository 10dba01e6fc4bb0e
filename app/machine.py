"""The machine this server runs on: its CPUs, its memory limit (cgroup) and which image it is,
and the worker count and runtime that follow from them when the settings leave them unset.

app/config.py uses `default_worker_count`, `default_inference_threads` and
`runtime_for_this_machine` as the defaults of WEB_CONCURRENCY, INFERENCE_THREADS and
INFERENCE_RUNTIME (figures: docs/deploy.md "Measured"), and `default_body_budget` and
`default_max_upload` for BODY_BUDGET_MB and MAX_UPLOAD_MB (figures: docs/reliability.md
"A memory budget for bodies").
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

MB = 1024 * 1024

# Peak memory (PSS without CUDA library pages, all server processes, 8 clients, resnet18
# at 224 px, onnxruntime) measured with 1 and 2 workers by benchmarks/deploy_footprint.py,
# rounded up (docs/deploy.md "Measured"): what the master and its first worker take, and
# what each further worker adds, for the default ("torch") and the lean image.
# The default image's workers now load torch, fastai and the learner each for themselves,
# behind the compiled graph (app/explainer.py), instead of sharing the master's: a further
# worker added 734 MB (PSS after explaining; 737 MB with one worker, 1,471 MB with two;
# gunicorn on the host, resnet18 at 224 px, a busy machine), not 230. To be re-measured in
# the image; one worker (SERVER_MB) took less than before (931 MB the same way).
SERVER_MB = {"torch": 1070, "lean": 280}
EXTRA_WORKER_MB = {"torch": 760, "lean": 175}
MEMORY_HEADROOM = 0.85  # use at most this share of the limit: page cache and spikes need room

# What one worker holds besides request bodies, from the memory suite (tests/memory, one
# worker; docs/reliability.md): the server's idle footprint in its cgroup after one photo,
# less its model (a 45 MB resnet18 export; the default image measured with PyTorch and the
# CUDA wheels installed here), and the highest peak above idle of one decode at the default
# MAX_IMAGE_PIXELS (a 21 MP HEIC, +244 MB), which scales with MAX_IMAGE_PIXELS. MARGIN_MB:
# what earlier requests leave in the heap and page cache (peaks drifted 10-20 MB in reruns).
IDLE_MB = {"torch": 520, "lean": 155}
DECODE_MB_PER_MP = 250 / 40
MARGIN_MB = 24
MIN_BODY_BUDGET_MB = 16  # two 8 MB phone photos; below it the machine is too small for the model
UNLIMITED_BODY_BUDGET_MB = 512  # no memory limit known (a developer's machine)
UPLOAD_CAP_MB = 40  # a 108 MP phone JPEG (24-36 MB) with room


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
    a third less (a 1 GB machine: docs/decisions.md)."""
    if image == "torch" and limit is not None and limit * MEMORY_HEADROOM / MB < SERVER_MB[image]:
        return "torch"
    return "auto"


def installed_image() -> str:
    """ "lean" where torch is not installed (the lean image), else "torch"."""
    return "torch" if importlib.util.find_spec("torch") else "lean"


def default_worker_count() -> int:
    """WEB_CONCURRENCY when unset: one per core (at most 4), as many as the memory limit fits."""
    return memory_capped_workers(default_workers(cpu_count()), memory_limit(), installed_image())


def default_inference_threads() -> int:
    """INFERENCE_THREADS when unset: every core, so a lone request's network uses them all."""
    return cpu_count()


def runtime_for_this_machine() -> str:
    """INFERENCE_RUNTIME when unset (see default_runtime)."""
    return default_runtime(memory_limit(), installed_image())


def body_room(limit: int, image: str, workers: int, model_bytes: int,
              max_image_pixels: int) -> int:
    """Bytes the memory limit leaves each worker for request bodies after the idle server,
    the model(s), the other workers and one decode per worker (negative: not even that)."""
    decode = DECODE_MB_PER_MP * max_image_pixels / 1e6 * MB
    fixed = (IDLE_MB[image] + MARGIN_MB + (workers - 1) * EXTRA_WORKER_MB[image]) * MB
    return int((limit - fixed - model_bytes) / workers - decode)


def body_budget(limit: int | None, image: str, workers: int, model_bytes: int,
                max_image_pixels: int) -> int:
    """Bytes of request bodies one worker may hold at once (BODY_BUDGET_MB when unset): the
    body room, at least MIN_BODY_BUDGET_MB."""
    if limit is None:
        return UNLIMITED_BODY_BUDGET_MB * MB
    return max(body_room(limit, image, workers, model_bytes, max_image_pixels),
               MIN_BODY_BUDGET_MB * MB)


def shadow_bytes(shadow: Path | None, workers: int) -> int:
    """What a shadow model (SHADOW_MODEL) adds to the server: its weights once where it is
    loaded (the master) and once in each worker's onnxruntime session, counted as the larger
    of its export.pkl and compiled graph (the lean image keeps only the graph); 0 for none."""
    if shadow is None:
        return 0
    sizes = [path.stat().st_size for path in (shadow, shadow.with_suffix(".onnx"))
             if path.is_file()]
    return max(sizes, default=0) * (workers + 1)


def shadow_fits(limit: int | None, image: str, workers: int, model_bytes: int, shadow: int,
                max_image_pixels: int) -> bool:
    """Whether a shadow of `shadow` bytes (shadow_bytes) still leaves every worker
    MIN_BODY_BUDGET_MB for bodies beside the served model and its decodes."""
    return limit is None or body_room(limit, image, workers, model_bytes + shadow,
                                      max_image_pixels) >= MIN_BODY_BUDGET_MB * MB


def default_body_budget(workers: int, model: Path, max_image_pixels: int,
                        shadow: Path | None = None) -> int:
    """BODY_BUDGET_MB when unset, in bytes (see body_budget), for this machine, model and
    shadow."""
    try:
        model_bytes = model.stat().st_size
    except OSError:  # loading the model says what is wrong with it
        model_bytes = 0
    return body_budget(memory_limit(), installed_image(), workers,
                       model_bytes + shadow_bytes(shadow, workers), max_image_pixels)


def default_max_upload(budget: int) -> float:
    """MAX_UPLOAD_MB when unset, in MB: half the body budget, so one upload at the limit can
    arrive while another is decoded, at most UPLOAD_CAP_MB."""
    return float(min(UPLOAD_CAP_MB, budget // 2 // MB))
