"""Pages in Debian's Chromium for the browser tests: each in a fresh profile, console errors kept.

Playwright drives the Chromium that `harness.chromium` finds (Playwright's own browser
download is not used).
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile

from harness.chromium import chromium_path

CHROMIUM = chromium_path()
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]
SKIP_REASON = ("Chromium is not installed (apt-get install chromium); "
               ".ci/run fails without it")


@contextlib.contextmanager
def page_opener(playwright, base_url: str, timeout_ms: int = 20_000):
    """Yields open_(javascript=True, **context options) -> a page on `base_url`/, in a fresh
    browser with its own empty profile; console errors are collected on page.errors."""
    contexts, profiles = [], []

    def open_(javascript: bool = True, **options):
        profile = tempfile.mkdtemp(prefix="test-chromium-")
        profiles.append(profile)
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
            java_script_enabled=javascript, **options)
        contexts.append(context)
        context.set_default_timeout(timeout_ms)
        page = context.pages[0] if context.pages else context.new_page()
        page.errors = []
        page.on("console", lambda msg: msg.type == "error" and page.errors.append(msg.text))
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        assert page.goto(base_url + "/").status == 200
        return page

    try:
        yield open_
    finally:
        for context in contexts:
            context.close()
        for profile in profiles:
            shutil.rmtree(profile, ignore_errors=True)
