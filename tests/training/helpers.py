"""Small helpers shared by the training tests."""
from __future__ import annotations

import hashlib
from pathlib import Path

# The fastest settings that still train: 32 px, from scratch, a fixed learning rate (no lr_find).
FAST = ["--no-pretrained", "--size", "32", "--bs", "8", "--no-augment", "--lr", "1e-2"]


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under root (hidden ones included)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders a run must never leave behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))
