"""The machine a figure was measured on: CPU model, the CPU flags that change inference
speed, and the load average. Every benchmark prints these lines beside its figures, since a
figure from a busy or different machine means something else."""
from __future__ import annotations

import os

from classifier.engines import SPEED_FLAGS, cpu_facts


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. "load average 0.12 0.30 0.41"."""
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu() -> str:
    """CPU model, usable CPUs and which of the SPEED_FLAGS it has (as the engine cache reads them)."""
    facts = cpu_facts()
    has = " ".join(facts["flags"]) or "none of " + "/".join(SPEED_FLAGS)
    return f"{facts['model']}, {len(os.sched_getaffinity(0))} CPUs, flags: {has}"


def machine_line() -> str:
    """One line for before and after a measurement: the CPU and the load right now."""
    return f"{cpu()}; {load_average()}"
