"""The documentation's shape: a short README, and no relative link that leads nowhere.

README.md is the front door (at most 200 lines); the rest lives in docs/*.md. Every relative
link or image in them must name a file that exists, and a `#section` after a Markdown file must
name one of its headings (GitHub's anchors). docs/incoming/ holds drafts and is not checked.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200
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


def test_readme_is_at_most_200_lines():
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
