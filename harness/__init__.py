"""What the tests and the benchmarks both drive the product with (the table of modules is in
docs/testing.md). Nothing here downloads anything or listens beyond loopback."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
