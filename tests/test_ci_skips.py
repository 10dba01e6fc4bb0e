"""Under CI=true a skip fails the run unless tests/ci_skips.py's ALLOWED_SKIPS names it."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.ci_skips import skip_allowed
from tests.conftest import ROOT

SKIPPING_TEST = '''
import pytest


def test_runs():
    pass


def test_needs_a_tool():
    pytest.skip("sometool is not installed")
'''


def run_pytest(folder, ci: str | None):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    command = [sys.executable, "-m", "pytest", "-q", "-p", "tests.ci_skips", "-p",
               "no:cacheprovider", "-p", "no:hypothesispytest", str(folder)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_skip_fails_the_run_under_ci_and_is_named(tmp_path):
    (tmp_path / "test_demo.py").write_text(SKIPPING_TEST)
    result = run_pytest(tmp_path, ci="true")
    assert result.returncode == 1, result.stdout
    assert "test_demo.py::test_needs_a_tool: sometool is not installed" in result.stdout
    assert "not on the allow-list" in result.stdout


def test_a_skip_outside_ci_passes(tmp_path):
    (tmp_path / "test_demo.py").write_text(SKIPPING_TEST)
    result = run_pytest(tmp_path, ci=None)
    assert result.returncode == 0, result.stdout
    assert "allow-list" not in result.stdout


def test_the_skips_the_issue_named_are_not_allowed():
    """The machine-size tests and the TLS test must run in CI (.ci/run provides for them)."""
    assert not skip_allowed("tests/deploy/test_container_smoke.py",
                            "cannot create a memory cgroup here (needs root and a writable "
                            "cgroup fs)")
    assert not skip_allowed("tests/app/test_url_input.py", "openssl is not installed")
    assert skip_allowed("tests/deploy/test_image.py", "a serving test failed first")
