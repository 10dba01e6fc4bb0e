"""Workers sized by the machine: the cgroup memory limit caps what the CPU count asks for."""
from __future__ import annotations

from app.machine import MB, default_runtime, memory_capped_workers, memory_limit


def cgroup_files(tmp_path, proc: str, files: dict[str, str]):
    (tmp_path / "proc").write_text(proc)
    for rel, text in files.items():
        path = tmp_path / "cg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"cgroup_root": tmp_path / "cg", "proc_cgroup": tmp_path / "proc"}


def test_reads_cgroup_v2_limit_of_own_group_and_namespace_root(tmp_path):
    assert memory_limit(**cgroup_files(tmp_path, "0::/fly/app\n",
                                       {"fly/app/memory.max": "1073741824\n"})) == 1 << 30
    (tmp_path / "cg" / "fly" / "app" / "memory.max").write_text("max\n")
    assert memory_limit(cgroup_root=tmp_path / "cg", proc_cgroup=tmp_path / "proc") is None


def test_reads_cgroup_v1_limit_and_treats_the_huge_default_as_none(tmp_path):
    args = cgroup_files(tmp_path, "4:memory:/docker/abc\n3:cpuset:/\n",
                        {"memory/docker/abc/memory.limit_in_bytes": str(512 * MB)})
    assert memory_limit(**args) == 512 * MB
    (tmp_path / "cg" / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text(
        "9223372036854771712")
    assert memory_limit(**args) is None


def test_no_cgroup_files_means_no_limit(tmp_path):
    assert memory_limit(cgroup_root=tmp_path, proc_cgroup=tmp_path / "missing") is None


def test_memory_caps_workers_for_each_image():
    assert memory_capped_workers(2, None, "torch") == 2           # no limit: the CPU count rules
    assert memory_capped_workers(2, 1024 * MB, "torch") == 1      # fly's 1 GB: one torch worker
    assert memory_capped_workers(4, 8192 * MB, "torch") == 4
    assert memory_capped_workers(2, 256 * MB, "torch") == 1       # never fewer than one
    assert memory_capped_workers(2, 1024 * MB, "lean") == 2       # the lean image fits more
    assert memory_capped_workers(4, 256 * MB, "lean") == 1


def test_runtime_is_onnxruntime_where_it_fits_else_torch():
    assert default_runtime(None, "torch") == "auto"
    assert default_runtime(1024 * MB, "torch") == "torch"    # fly's 1 GB machine
    assert default_runtime(2048 * MB, "torch") == "auto"
    assert default_runtime(512 * MB, "lean") == "auto"       # the lean image has only onnxruntime
