"""docs/serving.md's table of settings, made from app/config.py's Settings (`make
settings-docs` writes it; tests/test_docs.py checks the file holds what this makes)."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from app.config import ROOT, Settings

# docs/serving.md's table of settings lies between these two lines.
TABLE_BEGIN = ("<!-- Settings table: made from app/config.py's Settings by `make settings-docs`"
               " (tests/test_docs.py checks it); edit it there. -->")
TABLE_END = "<!-- End of the settings table. -->"


def _shown_default(f) -> str:
    value = f.default
    if f.metadata["shown"]:
        return f.metadata["shown"]
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        value = "on" if value else "off"
    elif isinstance(value, Path):
        value = value.relative_to(ROOT).as_posix()
    elif isinstance(value, float):
        value = f"{value:g}"
    return f"`{value}`"


def docs_table() -> str:
    """The Markdown table of every setting: variable, default, meaning."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    rows += [f"| `{f.metadata['env']}` | {_shown_default(f)} | {f.metadata['doc']} |"
             for f in fields(Settings)]
    return "\n".join(rows) + "\n"


def write_docs_table(path: Path = ROOT / "docs" / "serving.md") -> None:
    """Replace the table between TABLE_BEGIN and TABLE_END with `docs_table()`."""
    head, rest = path.read_text().split(TABLE_BEGIN + "\n", 1)
    tail = rest.split(TABLE_END, 1)[1]
    path.write_text(head + TABLE_BEGIN + "\n" + docs_table() + TABLE_END + tail)

