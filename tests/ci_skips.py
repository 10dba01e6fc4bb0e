"""Under CI=true (.ci/run) every test must run: a skip fails the run unless ALLOWED_SKIPS
names it. Its hooks are imported by tests/conftest.py; `-p tests.ci_skips` loads them alone."""
from __future__ import annotations

import os

import pytest

# Skips that may happen under CI=true: (test file, words of its reason), each with why a skip
# there hides nothing. .ci/run provides what every other test needs (Chromium, buildah,
# openssl, promtool, a memory cgroup), so their skips fail the run.
ALLOWED_SKIPS = (
    # The lean/default comparison needs both images' answers. It skips only when a serving
    # test of one image failed, and that failure already fails the run.
    ("tests/deploy/test_image.py", "a serving test failed first"),
    # CI's disk is shared with the machine's other jobs: with less free than a first build
    # needs, the builds would fail on "no space left on device" halfway (as one CI run did),
    # which says nothing about the image. The skip's reason gives the figures, in the summary.
    ("tests/deploy/test_image.py", "not enough free disk for the image builds"),
)
unexpected_skips: list[tuple[str, str]] = []  # (node id, reason), filled under CI=true


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def _note_skip(report) -> None:
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if not skip_allowed(report.nodeid.split("::")[0], reason):
        unexpected_skips.append((report.nodeid, reason))


def skip_allowed(test_file: str, reason: str) -> bool:
    return any(test_file == file and words in reason for file, words in ALLOWED_SKIPS)


def pytest_runtest_logreport(report):
    _note_skip(report)


def pytest_collectreport(report):
    _note_skip(report)  # a module that skips itself (importorskip at import time)


def pytest_sessionfinish(session):
    if unexpected_skips and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if not unexpected_skips:
        return
    terminalreporter.write_sep("=", f"{len(unexpected_skips)} skipped under CI=true, not on "
                                    "the allow-list: the run fails", red=True)
    for nodeid, reason in unexpected_skips:
        terminalreporter.write_line(f"SKIPPED {nodeid}: {reason}")
    terminalreporter.write_line("Install what the test needs in .ci/run, or add the skip to "
                                "ALLOWED_SKIPS in tests/ci_skips.py with why it is fine.")
