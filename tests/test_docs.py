"""The documentation's shape: a short README, no relative link that leads nowhere, and a
serving reference that cannot drift from the code.

README.md is the front door (at most 250 lines, its layout table included); the rest lives in docs/*.md. Every relative
link or image in them must name a file that exists, and a `#section` after a Markdown file must
name one of its headings (GitHub's anchors). docs/serving.md's configuration table is the one
app/config.py makes from its Settings, and its errors table lists every code in
app/errors.py's ERRORS with its status. Its diagram of app/'s layers is the table that
tests/app/test_layers.py enforces. Every figure in docs/measurements.md comes with its command and
the load it was taken at.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# 200 until the layout table named every module of app/, classifier/, training/, harness/ and
# benchmarks/ (about 40 rows, checked complete below) and two ten-hop traces joined it.
README_MAX_LINES = 250
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def relative_links(markdown: str) -> list[str]:
    """Targets of [text](target) and ![alt](target) outside code, except URLs and mail."""
    text = CODE_SPAN.sub("", FENCE.sub("", markdown))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def anchors(markdown: str) -> set[str]:
    """GitHub's ids for the headings of a Markdown file: lower case, punctuation dropped,
    spaces to hyphens, repeats numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    ids = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", markdown), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    return ids


def test_readme_is_short():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; keep it to {README_MAX_LINES} and move detail to docs/")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_somewhere(doc):
    broken = []
    for target in relative_links(doc.read_text()):
        path_part, _, anchor = target.partition("#")
        path = (doc.parent / path_part).resolve() if path_part else doc
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path.read_text()):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links: {broken}"


def test_the_link_checker_sees_links_and_headings():
    """The checks above would pass vacuously if these helpers found nothing."""
    text = ("# Serving: API, configuration\n## Python `requests`\n## Python `requests`\n"
            "See [a](docs/x.md#y), ![b](form.png), [web](https://e.org), `[code](no.md)`.\n"
            "```\n[fenced](no.md)\n# not a heading\n```\n")
    assert relative_links(text) == ["docs/x.md#y", "form.png"]
    assert anchors(text) == {"serving-api-configuration", "python-requests", "python-requests-1"}


def section(markdown: str, heading: str) -> str:
    """The text under `## heading`, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", markdown,
                      re.MULTILINE | re.DOTALL)
    assert match, f"no '## {heading}' section"
    return match.group(1)


def test_serving_docs_table_of_settings_is_the_one_made_from_settings():
    from app.config import ENV_NAMES
    from app.settings_docs import TABLE_BEGIN, TABLE_END, docs_table

    configuration = section((ROOT / "docs" / "serving.md").read_text(), "Configuration")
    assert TABLE_BEGIN in configuration and TABLE_END in configuration
    written = configuration.split(TABLE_BEGIN + "\n", 1)[1].split(TABLE_END, 1)[0]
    assert written == docs_table(), ("docs/serving.md's table of settings differs from "
                                     "app/config.py's Settings: run `make settings-docs`")
    assert [line.split("`")[1] for line in written.splitlines()[2:]] == list(ENV_NAMES)


def test_serving_docs_list_every_error_code():
    from app.errors import ERRORS

    errors = section((ROOT / "docs" / "serving.md").read_text(), "Errors")
    missing = [code for code in ERRORS if f"`{code}`" not in errors]
    assert not missing, f"error codes in app/errors.py's ERRORS missing from docs/serving.md: {missing}"
    for code, status in ERRORS.items():
        assert re.search(rf"^\| {status} \|[^\n]*`{code}`", errors, re.MULTILINE), (
            f"docs/serving.md gives `{code}` a status other than {status}")


def sections_with_tables(markdown: str) -> dict[str, str]:
    """Heading -> text of each `##`/`###` section (up to the next such heading) holding a table."""
    parts = re.split(r"^#{2,3} (.+)$", FENCE.sub("```\n```", markdown), flags=re.MULTILINE)
    return {heading: body for heading, body in zip(parts[1::2], parts[2::2])
            if re.search(r"^\|", body, re.MULTILINE)}


def test_each_measured_figure_has_its_command_and_load():
    """docs/measurements.md holds current figures, each with the command that reproduces it and
    the load average when it was taken (or a plain 'load not recorded')."""
    sections = sections_with_tables((ROOT / "docs" / "measurements.md").read_text())
    no_command = [h for h, body in sections.items() if "```" not in body]
    no_load = [h for h, body in sections.items() if not re.search(r"\bload\b", body, re.IGNORECASE)]
    assert sections, "docs/measurements.md has no tables of figures"
    assert not no_command, f"docs/measurements.md sections with figures but no fenced command: {no_command}"
    assert not no_load, f"docs/measurements.md sections with figures but no load average: {no_load}"


def diagram_layers(markdown: str) -> list[set[str]]:
    """The layers drawn in serving.md's "Layers of app/": its first fenced block, layers
    separated by →, modules by commas; a note in parentheses names no module."""
    block = re.search(r"^```[^\n]*\n(.*?)^```", section(markdown, "Layers of app/"),
                      re.MULTILINE | re.DOTALL)
    assert block, "no fenced diagram under '## Layers of app/'"
    drawn = re.sub(r"\([^)]*\)", "", block.group(1))
    return [{name.strip() for name in layer.split(",")} for layer in drawn.split("→")]


def test_diagram_layers_reads_layers_and_drops_notes():
    text = "## Layers of app/\n\n```\na, b\n→ c       (the note, with a comma)\n→ d\n```\n"
    assert diagram_layers(text) == [{"a", "b"}, {"c"}, {"d"}]


def test_serving_docs_layer_diagram_is_the_layer_test_table():
    from tests.app.test_layers import LAYERS

    drawn = diagram_layers((ROOT / "docs" / "serving.md").read_text())
    assert drawn == LAYERS, (
        "docs/serving.md's layer diagram differs from tests/app/test_layers.py's LAYERS:\n"
        f"  drawn: {[sorted(layer) for layer in drawn]}\n"
        f"  LAYERS: {[sorted(layer) for layer in LAYERS]}")


CODE_PACKAGES = ("app", "classifier", "training", "harness", "benchmarks")


def holds_code(path: Path) -> bool:
    """False for a module that is empty or only a docstring (a bare package __init__.py)."""
    body = ast.parse(path.read_text()).body
    return bool(body[1:] if ast.get_docstring(ast.Module(body=body, type_ignores=[])) else body)


def layout_paths(readme: str) -> set[str]:
    """The backticked paths in the first column of the README's layout table."""
    return {name.rstrip("/") for line in section(readme, "Layout").splitlines()
            if line.startswith("| ") and not line.startswith("| path")
            for name in re.findall(r"`([^`]+)`", line.split("|")[1])}


def test_readme_layout_names_every_module_and_only_real_paths():
    named = layout_paths((ROOT / "README.md").read_text())
    modules = {path.relative_to(ROOT).as_posix() for package in CODE_PACKAGES
               for path in (ROOT / package).rglob("*.py") if holds_code(path)}
    assert not modules - named, f"README.md's layout table misses {sorted(modules - named)}"
    gone = sorted(name for name in named if not (ROOT / name).exists())
    assert not gone, f"README.md's layout table names paths that do not exist: {gone}"


TRACE_HOP = re.compile(r"^\s*\d+\s+([\w/]+\.py)\s+([\w.]+)", re.MULTILINE)


def defines(path: Path, dotted: str) -> bool:
    """Whether `path` defines `dotted`: a top-level function or class, or Class.method."""
    scope = ast.parse(path.read_text()).body
    for part in dotted.split("."):
        found = [node for node in scope if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                              ast.ClassDef)) and node.name == part]
        if not found:
            return False
        scope = getattr(found[0], "body", [])
    return True


def readme_trace_hops() -> list[tuple[str, str]]:
    """(file, function) of each numbered hop in the README's request and training traces."""
    traces = section((ROOT / "README.md").read_text(), "How a request and a training run go")
    return TRACE_HOP.findall(traces)


def test_readme_traces_name_files_and_functions_that_exist():
    hops = readme_trace_hops()
    assert len(hops) >= 16, f"expected two traces of about ten hops each, found {len(hops)}"
    wrong = [f"{file} {name}" for file, name in hops
             if not (ROOT / file).is_file() or not defines(ROOT / file, name)]
    assert not wrong, f"README.md's traces name hops the code does not have: {wrong}"


def test_defines_finds_functions_and_methods_only():
    here = Path(__file__)
    assert defines(here, "defines") and not defines(here, "no_such_function")
    assert defines(ROOT / "app" / "worker.py", "BoundedGeventWorker.handle")
    assert not defines(ROOT / "app" / "worker.py", "BoundedGeventWorker.no_such_method")


def test_benchmarks_and_harness_import_nothing_from_tests():
    """docs/testing.md: benchmarks/ imports from harness/, never from tests/ (and harness/
    itself stands alone), so a benchmark runs without the test suite's fixtures."""
    offenders = [f"{path.relative_to(ROOT)}: {line.strip()}"
                 for folder in ("benchmarks", "harness") for path in (ROOT / folder).glob("*.py")
                 for line in path.read_text().splitlines()
                 if re.match(r"\s*(from|import)\s+tests(\.|\s|$)", line)]
    assert not offenders
