"""Sandbox pool sizing: the machine's CPUs and memory as cgroups v1/v2 and /proc report them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.sandbox.sizing import MachineSize, processes_for


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return root


@pytest.fixture
def meminfo(tmp_path: Path) -> Path:
    return (
        write(tmp_path, {"meminfo": "MemTotal:        1048576 kB\nMemFree:          524288 kB"}) / "meminfo"
    )


def test_cgroup_v2_quota_and_limit(tmp_path: Path, meminfo: Path) -> None:
    cgroup = write(tmp_path / "v2", {"cpu.max": "150000 100000", "memory.max": str(256 * 2**20)})

    assert MachineSize.detect(cgroup, meminfo) == MachineSize(min(1.5, len(os.sched_getaffinity(0))), 256)


def test_cgroup_v2_without_limits_falls_back_to_affinity_and_mem_total(tmp_path: Path, meminfo: Path) -> None:
    cgroup = write(tmp_path / "v2", {"cpu.max": "max 100000", "memory.max": "max"})

    assert MachineSize.detect(cgroup, meminfo) == MachineSize(float(len(os.sched_getaffinity(0))), 1024)


def test_cgroup_v1(tmp_path: Path, meminfo: Path) -> None:
    limited = write(tmp_path / "v1", {
        "cpu/cpu.cfs_quota_us": "100000", "cpu/cpu.cfs_period_us": "100000",
        "memory/memory.limit_in_bytes": str(512 * 2**20),
    })  # fmt: skip
    unlimited = write(tmp_path / "v1-free", {
        "cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000",
        "memory/memory.limit_in_bytes": "9223372036854771712",
    })  # fmt: skip

    assert MachineSize.detect(limited, meminfo) == MachineSize(1.0, 512)
    assert MachineSize.detect(unlimited, meminfo).memory_mb == 1024


@pytest.mark.parametrize(
    ("cpus", "memory_mb", "processes"),
    [
        (1, 256, 1),  # Fly shared-cpu-1x, the Pro tier: one process, the worker keeps the rest
        (0.5, 256, 1),  # a fraction of a CPU still gets one
        (2, 256, 1),  # CPUs to spare, memory for only one
        (2, 1024, 2),
        (4, 2048, 4),
        (8, 512, 5),  # memory bounds it
        (64, 65536, 16),
    ],
)
def test_one_process_per_cpu_as_many_as_fit(cpus: float, memory_mb: int, processes: int) -> None:
    assert processes_for(MachineSize(cpus, memory_mb)) == processes
