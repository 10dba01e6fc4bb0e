"""The training process keeps the memory it frees (training/allocator.py): a step's large
tensors reuse the last step's pages instead of faulting new ones in."""
from __future__ import annotations

import subprocess
import sys

from training import allocator, train

# 64 MB tensors, one after another, each freed before the next: over glibc's largest mmap
# threshold (32 MB), as a resnet18 step's activations are. Prints the minor page faults the
# last five took, after twelve that let the kept heap settle (the interpreter's own small
# allocations land in the first freed ones, as in a training step's first few).
FIVE_LARGE_TENSORS = """
import resource, sys, torch
from training.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
for _ in range(12):
    torch.ones(16 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.ones(16 << 20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FIVE_LARGE_TENSORS, mode], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.split()[-1])


def test_a_freed_large_tensor_is_reused_not_faulted_in_again():
    plain, kept = faults("plain"), faults("keep")
    assert plain > 5 * 16384 * 0.8  # each 64 MB tensor faulted in anew: 16,384 pages
    assert kept < plain / 20


def test_the_training_command_keeps_freed_memory_before_it_reads_the_data(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    assert train.main([str(tmp_path / "missing"), "--out", str(tmp_path / "m.pkl")]) == 2
    assert calls == [1]
