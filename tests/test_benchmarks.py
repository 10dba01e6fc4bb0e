"""Every benchmark still starts: a moved name or a changed signature fails here, not on the day
someone takes a figure (three benchmarks broke unnoticed that way once).

The fast test imports each module and runs its argument parser; the slow one runs the
cheapest benchmarks through `python -m` with their smallest options, so calls past the
parser (the shared asset builder, the load driver, the predictor) are exercised too.
"""
from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest

from harness import ROOT

# A benchmark is a module of benchmarks/ with a main(argv); cli.py and tutorial_app.py (the
# app the serving benchmark compares against) are helpers, not benchmarks.
BENCHMARKS = sorted(path.stem for path in (ROOT / "benchmarks").glob("*.py")
                    if re.search(r"^def main\(argv=None\)", path.read_text(), re.MULTILINE))


def test_every_benchmark_is_found():
    helpers = {"__init__", "cli", "tutorial_app"}
    modules = {path.stem for path in (ROOT / "benchmarks").glob("*.py")} - helpers
    assert set(BENCHMARKS) == modules, "a benchmark without main(argv=None) escapes these tests"


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_parses_its_command_line(name, capsys):
    module = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


# The smallest run each option set allows: a few seconds of real work apiece.
SMALLEST = {
    "inference_bench": ["--size", "32", "--threads", "1", "--batches", "1", "--rounds", "1",
                        "--images", "1"],
    "explain_cost": ["--size", "32", "--rounds", "1", "--runtime", "torch"],
    "batch_predict_bench": ["--images", "1", "--rounds", "1", "--runtime", "torch"],
    "decode_attacks": ["--only", "tiff_2m_strips", "png_palette_40mp"],
    "engine_bench": ["--size", "32", "--rounds", "1", "--runs", "1", "--seconds", "0.1",
                     "--images", "2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALLEST))
def test_benchmark_runs_its_smallest_case(name):
    result = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *SMALLEST[name]],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "load average" in result.stdout, result.stdout[-2000:]
