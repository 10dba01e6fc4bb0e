"""Memory cgroups for the tests that serve inside a machine-sized limit (needs root).

cgroup v2 (memory.max) where it is mounted, else v1 (/sys/fs/cgroup/memory). The memory
suite (tests/memory/) and the container smoke test share these.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

# per version: the limit file, the peak file (resettable on v1), the usage file
_FILES = {"memory.max": ("memory.peak", "memory.current"),
          "memory.limit_in_bytes": ("memory.max_usage_in_bytes", "memory.usage_in_bytes")}


def memory_cgroup(name: str, limit: int | None) -> Path | None:
    """A new memory cgroup (v2, else v1) limited to `limit` bytes (None: no limit), or None
    where one cannot be made here."""
    for parent, limit_file in ((Path("/sys/fs/cgroup"), "memory.max"),
                               (Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes")):
        if not (parent / limit_file).exists() and not (parent / "cgroup.subtree_control").exists():
            continue
        group = parent / name
        try:
            group.mkdir(exist_ok=True)
            if limit is not None:
                set_limit(group, limit)
            return group
        except OSError:
            shutil.rmtree(group, ignore_errors=True)
    return None


def _limit_file(group: Path) -> str:
    return "memory.max" if (group / "memory.max").exists() else "memory.limit_in_bytes"


def set_limit(group: Path, limit: int) -> None:
    (group / _limit_file(group)).write_text(str(limit))


def usage_bytes(group: Path) -> int:
    return int((group / _FILES[_limit_file(group)][1]).read_text())


def peak_bytes(group: Path) -> int:
    """The group's highest memory use since it was made or `reset_peak`."""
    return int((group / _FILES[_limit_file(group)][0]).read_text())


def reset_peak(group: Path) -> None:
    (group / _FILES[_limit_file(group)][0]).write_text("0")


def oom_kills(group: Path) -> int:
    for name in ("memory.events", "memory.oom_control"):
        if (group / name).exists():
            fields = dict(line.split() for line in (group / name).read_text().splitlines())
            return int(fields.get("oom_kill", 0))
    return 0


def limit_hits(group: Path) -> int:
    """How often the group reached its limit (v1 failcnt, v2 the "max" event)."""
    if (group / "memory.failcnt").exists():
        return int((group / "memory.failcnt").read_text())
    fields = dict(line.split() for line in (group / "memory.events").read_text().splitlines())
    return int(fields.get("max", 0))


def remove(group: Path, timeout: float = 5.0) -> bool:
    """Remove the group once its processes have gone; False if they outlive `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            group.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
