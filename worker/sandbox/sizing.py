"""How many sandbox processes the machine affords: one per CPU, as many as fit in memory beside the worker.

A sandbox process only helps with a CPU of its own to run on, and each costs about PROCESS_MB of memory
(interpreter, numpy, TA-Lib, the snapshot pages it reads, the helper memo). The machine's size is what
the kernel grants this process: its CPU affinity and cgroup CPU quota, and its cgroup memory limit or,
without one, the memory the kernel reports (a Fly Machine is a VM: its own memory is the limit).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

# The worker itself at 20 traders x 100 symbols x 3 timeframes x 1000 candles (bench_worker_memory), with
# room for the kernel and the allocator; and one sandbox process after sweeps of that load.
WORKER_MB = 160
PROCESS_MB = 64
MAX_PROCESSES = 16

_CGROUP = Path("/sys/fs/cgroup")
_UNLIMITED_BYTES = 1 << 60  # cgroup v1 reports "no limit" as a number near 2**63


@dataclass(frozen=True, slots=True)
class MachineSize:
    cpus: float
    memory_mb: int

    @classmethod
    def detect(cls, cgroup: Path = _CGROUP, meminfo: Path = Path("/proc/meminfo")) -> MachineSize:
        """The CPUs and memory this process may use."""
        cpus = float(len(os.sched_getaffinity(0)))
        quota = _cpu_quota(cgroup)
        memory_bytes = _memory_limit_bytes(cgroup) or _mem_total_bytes(meminfo)
        return cls(min(cpus, quota) if quota else cpus, memory_bytes // (1024 * 1024))


def processes_for(machine: MachineSize) -> int:
    """One process per whole CPU (at least one), no more than fit in memory beside the worker."""
    by_cpu = max(1, math.floor(machine.cpus))
    by_memory = max(1, (machine.memory_mb - WORKER_MB) // PROCESS_MB)
    return min(by_cpu, by_memory, MAX_PROCESSES)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cpu_quota(cgroup: Path) -> float | None:
    """CPUs the cgroup's CFS quota allows (v2 cpu.max, v1 cpu.cfs_quota_us), None without a quota."""
    text = _read(cgroup / "cpu.max")
    if text is not None:
        quota, _, period = text.partition(" ")
        return int(quota) / int(period or 100_000) if quota != "max" else None
    quota_text, period_text = _read(cgroup / "cpu/cpu.cfs_quota_us"), _read(cgroup / "cpu/cpu.cfs_period_us")
    if quota_text is None or period_text is None or int(quota_text) <= 0:
        return None
    return int(quota_text) / int(period_text)


def _memory_limit_bytes(cgroup: Path) -> int | None:
    """The cgroup's memory limit (v2 memory.max, v1 memory.limit_in_bytes), None without one."""
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        text = _read(cgroup / name)
        if text is not None:
            return None if text == "max" or int(text) >= _UNLIMITED_BYTES else int(text)
    return None


def _mem_total_bytes(meminfo: Path) -> int:
    for line in (_read(meminfo) or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no MemTotal in {meminfo}")
