"""Read the Dockerfile and .dockerignore as data, so tests can hold them to the code."""
from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from harness import ROOT


@dataclass
class Dockerfile:
    """One build target as it runs: what it inherits from the stages it is built FROM
    included (ENV, CMD, HEALTHCHECK, USER, WORKDIR, EXPOSE, COPYs from the build context)."""
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    copies: list[tuple[str, str]] = field(default_factory=list)  # from the build context
    expose: list[int] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: str = ""
    workdir: str = "/"
    user: str = "root"
    runs: list[str] = field(default_factory=list)             # every stage of the file
    froms: list[str] = field(default_factory=list)            # every stage of the file
    stages: list[str] = field(default_factory=list)           # stage names, in file order
    parent: str = ""     # the stage this one is built FROM ("" for an image)
    layers: int = 0      # filesystem layers this stage adds itself (COPY, RUN, ADD)
    chain: list[tuple[str, int]] = field(default_factory=list)  # (stage, layers), target first


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


def parse_dockerfile(path: Path = ROOT / "Dockerfile", target: str | None = None) -> Dockerfile:
    """The build target `target` (default: the last stage, what a plain build makes)."""
    stages: dict[str, Dockerfile] = {}
    args: dict[str, str] = {}
    runs, froms, names = [], [], []
    current = None
    for word, rest in _instructions(path.read_text()):
        if word == "FROM":
            froms.append(rest)
            parts = rest.split()
            parent = stages.get(parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(names))
            names.append(name)
            current = Dockerfile() if parent is None else Dockerfile(
                env=dict(parent.env), copies=list(parent.copies), expose=list(parent.expose),
                cmd=list(parent.cmd), healthcheck=parent.healthcheck, workdir=parent.workdir,
                user=parent.user, parent=parts[0])
            stages[name] = current
        elif word == "ARG":
            name, _, default = rest.partition("=")
            args.setdefault(name, default)
        elif word == "ENV":
            current.env.update(_key_values(rest))
        elif word == "COPY":
            parts = shlex.split(rest)
            origin = next((p.split("=", 1)[1] for p in parts if p.startswith("--from=")), None)
            parts = [p for p in parts if not p.startswith("--")]
            if origin is None:
                current.copies += [(src, parts[-1]) for src in parts[:-1]]
            elif origin in stages and parts[0].rstrip("/") == stages[origin].workdir \
                    and parts[-1] in (".", "./"):
                current.copies += stages[origin].copies  # that stage's files, laid out alike
            current.layers += 1
        elif word in ("RUN", "ADD"):
            current.layers += 1
            if word == "RUN":
                runs.append(rest)
        elif word == "EXPOSE":
            current.expose += [int(p.split("/")[0]) for p in rest.split()]
        elif word == "CMD":
            current.cmd = json.loads(rest)
        elif word == "HEALTHCHECK":
            current.healthcheck = rest
        elif word == "WORKDIR":
            current.workdir = rest
        elif word == "USER":
            current.user = rest
    name = target or names[-1]
    result = stages[name]
    chain = []
    while name in stages:  # the target, the stage it is built FROM, and so on down
        chain.append((name, stages[name].layers))
        name = stages[name].parent
    result.chain = chain
    result.args, result.runs, result.froms, result.stages = args, runs, froms, names
    return result


def dockerignore_patterns(path: Path = ROOT / ".dockerignore") -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def lay_out_image(dockerfile: Dockerfile, dest: Path, models_dir: Path) -> Path:
    """Copy into `dest` exactly what the Dockerfile's COPY lines copy, models from `models_dir`.

    A file the app needs but the Dockerfile forgets is then missing here too.
    """
    for src, target in dockerfile.copies:
        if target.startswith("/"):  # outside WORKDIR: build inputs such as /tmp/requirements.txt
            continue
        source = models_dir if src.rstrip("/") == "models" else ROOT / src
        destination = dest / target
        if source.is_dir():
            shutil.copytree(source, destination, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    return dest
