"""Where Chromium is: one lookup for CI (.ci/run) and the browser tests.

CHROMIUM=/path overrides; otherwise the first of `chromium` and `chromium-browser` on PATH.
`python -m harness.chromium` prints the path, or exits 1 with one line when there is none.
"""
from __future__ import annotations

import os
import shutil
import sys


def chromium_path() -> str | None:
    return (os.environ.get("CHROMIUM") or shutil.which("chromium")
            or shutil.which("chromium-browser"))


if __name__ == "__main__":
    path = chromium_path()
    if not path:
        sys.exit("Chromium not found: set CHROMIUM=/path or apt-get install chromium")
    print(path)
