"""How a setting's text becomes its value: (variable name, raw text) -> value, or a one-line
ConfigError naming the variable. app/config.py's table names one of these per setting."""
from __future__ import annotations

import re
from pathlib import Path

from limits import parse_many

from classifier.engine_choice import PRECISIONS
from classifier.loader import RUNTIMES
from classifier.storage import check_location
from classifier.versions import NAME as VERSION_NAME


class ConfigError(RuntimeError):
    """A setting has a value we cannot use; the message names it (one line)."""


def _number(name: str, raw, kind, wanted: str, fits):
    """`raw` read as `kind` (int or float), or a ConfigError saying what `name` must be."""
    try:
        value = kind(str(raw).strip())
    except ValueError:
        value = None
    if value is None or not fits(value):
        raise ConfigError(f"{name} must be {wanted}, not {raw!r}.")
    return value


def whole_number(name: str, raw) -> int:
    return _number(name, raw, int, "a whole number of at least 1", lambda v: v >= 1)


def positive_number(name: str, raw) -> float:
    return _number(name, raw, float, "a positive number", lambda v: v > 0)


def fraction(name: str, raw) -> float:
    return _number(name, raw, float, "a number from 0 to 1", lambda v: 0 <= v <= 1)


def switch(name: str, raw) -> bool:
    value = str(raw).strip().lower()
    if value not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ConfigError(f"{name} must be on or off, not {raw!r}.")
    return value in ("1", "true", "yes", "on")


def runtime_name(name: str, raw) -> str:
    value = str(raw).strip().lower()
    if value not in RUNTIMES:
        raise ConfigError(f"{name} must be auto, onnx or torch, not {raw!r}.")
    return value


def precision_name(name: str, raw) -> str:
    value = str(raw).strip().lower()
    if value not in PRECISIONS:
        raise ConfigError(f"{name} must be {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}, "
                          f"not {raw!r}.")
    return value


def path(name: str, raw) -> Path:
    """Relative to the working directory, as a shell user means it. A URL is refused rather
    than taken for a folder named "s3:": only MODELS_URL and FEEDBACK_DIR take a bucket (the
    review queue claims an item by renaming its file, which a bucket cannot do atomically)."""
    if "://" in str(raw):
        raise ConfigError(f"{name} must be a local path, not a URL ({raw}): a bucket goes in "
                          "MODELS_URL (model versions) or FEEDBACK_DIR (corrections).")
    return Path.cwd() / Path(raw)


def store_location(name: str, raw) -> str:
    """A local folder (made absolute, as `path` does) or an s3:// URL (classifier/storage.py);
    any other scheme is refused rather than taken for a folder named "s3:"."""
    value = str(raw).strip()
    try:
        check_location(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return value if "://" in value else str(path(name, value))


def text(_name: str, raw) -> str:
    return str(raw)


def version_name(name: str, raw) -> str:
    """A version's name under models/versions/ (python -m training.versions lists them)."""
    value = str(raw).strip()
    if not VERSION_NAME.match(value):
        raise ConfigError(f"{name} must name a version under models/versions/ (like "
                          f"20261205-091500-ab12cd; python -m training.versions lists them), "
                          f"not {raw!r}.")
    return value


def rates(name: str, raw) -> str:
    """A budget in the `limits` library's notation: "30/minute", "10/minute;200/day"."""
    value = str(raw).strip()
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(f"{name} must be a rate such as 30/minute or 10/minute;200/day, "
                          f"not {raw!r}.") from None
    return value


def header_name(name: str, raw) -> str:
    value = str(raw).strip()
    if not re.fullmatch(r"[A-Za-z0-9-]+", value):
        raise ConfigError(f"{name} must be an HTTP header name such as Fly-Client-IP, "
                          f"not {raw!r}.")
    return value


def origins(_name: str, raw) -> tuple[str, ...]:
    """Comma-separated (or, from create_app, a list); without a trailing slash."""
    items = raw.split(",") if isinstance(raw, str) else raw
    return tuple(o.strip().rstrip("/") for o in items if o.strip())


def ports(name: str, raw) -> tuple[int, ...]:
    """Comma-separated TCP ports (or, from create_app, a list)."""
    items = raw.split(",") if isinstance(raw, str) else raw
    try:
        ports = tuple(int(str(p).strip()) for p in items if str(p).strip())
    except ValueError:
        ports = ()
    if not ports or not all(1 <= p <= 65535 for p in ports):
        raise ConfigError(f"{name} must be comma-separated port numbers, not {raw!r}.")
    return ports
