"""The machine a figure was measured on: CPU model, the CPU flags that change inference
speed, and the load average. Every benchmark prints these lines beside its figures, since a
figure from a busy or different machine means something else."""
from __future__ import annotations

import os
from pathlib import Path

# Vector and matrix units that torch and onnxruntime pick kernels by.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. "load average 0.12 0.30 0.41"."""
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu() -> str:
    """CPU model, usable CPUs and which of SPEED_FLAGS it has, from /proc/cpuinfo."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    has = " ".join(flag for flag in SPEED_FLAGS if flag in flags) or "none of " + "/".join(
        SPEED_FLAGS)
    return f"{model}, {len(os.sched_getaffinity(0))} CPUs, flags: {has}"


def machine_line() -> str:
    """One line for before and after a measurement: the CPU and the load right now."""
    return f"{cpu()}; {load_average()}"
