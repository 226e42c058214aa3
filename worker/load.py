"""The machine's load as scale-machines reads it from /metrics: how long signal sweeps take against their
interval (and how many were missed), and the CPU and memory of the worker and every process it started."""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

SWEEP_WINDOW_SECS = 120.0
_PROC = Path("/proc")
_TICKS_PER_SEC = os.sysconf("SC_CLK_TCK")


@dataclass
class SweepLoad:
    """Recent signal runs as a fraction of their trader's interval (1.0: a run takes the whole interval)."""

    window_secs: float = SWEEP_WINDOW_SECS
    # Runs that could not start on time because the trader's previous run was still going.
    missed: int = 0
    _runs: deque[tuple[float, float]] = field(default_factory=deque)  # (monotonic end, ratio)

    def record(self, duration_secs: float, period_secs: float, now_monotonic: float | None = None) -> None:
        now = time.monotonic() if now_monotonic is None else now_monotonic
        self._runs.append((now, duration_secs / period_secs if period_secs > 0 else 0.0))
        self._prune(now)

    def peak_ratio(self, now_monotonic: float | None = None) -> float:
        """The largest duration/interval over the window (0 when nothing ran)."""
        self._prune(time.monotonic() if now_monotonic is None else now_monotonic)
        return max((ratio for _, ratio in self._runs), default=0.0)

    def _prune(self, now: float) -> None:
        while self._runs and self._runs[0][0] < now - self.window_secs:
            self._runs.popleft()


@dataclass(frozen=True)
class ProcessReading:
    cpu_percent: float  # of one core, averaged since the previous reading
    cpu_count: int  # cores this process may run on
    memory_mb: float  # PSS of the process tree: shared pages counted once, as the machine holds them


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _cpu_secs(pid: int) -> float:
    """utime + stime of one process (its children are read on their own)."""
    fields = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SEC


def _pss_mb(pid: int) -> float:
    for line in (_PROC / str(pid) / "smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


class ProcessLoad:
    """Reads this process tree's CPU use since the previous reading and its memory, from /proc."""

    def __init__(self, pid: int | None = None) -> None:
        self._pid = os.getpid() if pid is None else pid
        self._last: tuple[float, dict[int, float]] = (time.monotonic(), self._sample()[0])

    def _sample(self) -> tuple[dict[int, float], float]:
        cpu: dict[int, float] = {}
        memory_mb = 0.0
        for pid in [self._pid, *_descendants(self._pid)]:
            try:
                cpu[pid] = _cpu_secs(pid)
                memory_mb += _pss_mb(pid)
            except (OSError, IndexError, ValueError):
                continue  # exited while we looked
        return cpu, memory_mb

    def read(self) -> ProcessReading:
        cpu, memory_mb = self._sample()
        now = time.monotonic()
        last_at, last_cpu = self._last
        # A process new since the last reading counts from zero; one that exited drops out.
        used = sum(secs - last_cpu.get(pid, 0.0) for pid, secs in cpu.items())
        self._last = (now, cpu)
        elapsed = now - last_at
        return ProcessReading(
            cpu_percent=max(0.0, used / elapsed * 100) if elapsed > 0 else 0.0,
            cpu_count=len(os.sched_getaffinity(0)),
            memory_mb=memory_mb,
        )
