"""Read the Dockerfile, .dockerignore and fly.toml as data, so tests can hold them to the code."""
from __future__ import annotations

import json
import shlex
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Dockerfile:
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)       # final stage only
    copies: list[tuple[str, str]] = field(default_factory=list)  # final stage, from the context
    expose: list[int] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: str = ""
    workdir: str = "/"
    runs: list[str] = field(default_factory=list)             # every stage
    froms: list[str] = field(default_factory=list)


def _instructions(text: str):
    """(INSTRUCTION, rest) pairs with line continuations joined and comments dropped."""
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        word, _, rest = logical.partition(" ")
        yield word.upper(), rest.strip()
        logical = ""


def _key_values(rest: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in shlex.split(rest))


def parse_dockerfile(path: Path = ROOT / "Dockerfile") -> Dockerfile:
    result = Dockerfile()
    for word, rest in _instructions(path.read_text()):
        if word == "FROM":
            result.froms.append(rest)
            result.env, result.copies, result.cmd = {}, [], []  # a new stage starts clean
        elif word == "ARG":
            name, _, default = rest.partition("=")
            result.args[name] = default
        elif word == "ENV":
            result.env.update(_key_values(rest))
        elif word == "COPY":
            parts = shlex.split(rest)
            if any(p.startswith("--from") for p in parts):
                continue
            parts = [p for p in parts if not p.startswith("--")]
            result.copies += [(src, parts[-1]) for src in parts[:-1]]
        elif word == "EXPOSE":
            result.expose += [int(p.split("/")[0]) for p in rest.split()]
        elif word == "CMD":
            result.cmd = json.loads(rest)
        elif word == "HEALTHCHECK":
            result.healthcheck = rest
        elif word == "WORKDIR":
            result.workdir = rest
        elif word == "RUN":
            result.runs.append(rest)
    return result


def dockerignore_patterns(path: Path = ROOT / ".dockerignore") -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def fly_config(path: Path = ROOT / "fly.toml") -> dict:
    return tomllib.loads(path.read_text())


def lay_out_image(dockerfile: Dockerfile, dest: Path, models_dir: Path) -> Path:
    """Copy into `dest` exactly what the Dockerfile's COPY lines copy, models from `models_dir`.

    A file the app needs but the Dockerfile forgets is then missing here too.
    """
    for src, target in dockerfile.copies:
        source = models_dir if src.rstrip("/") == "models" else ROOT / src
        destination = dest / target
        if source.is_dir():
            shutil.copytree(source, destination, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    return dest
