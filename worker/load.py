"""The machine's load as scale-machines reads it from /metrics: how long signal sweeps take against their
interval (and how many were missed), the CPU and memory of the worker and every process it started, and
the sweeps a set of traders is predicted to take (from what one check costs this machine)."""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

SWEEP_WINDOW_SECS = 120.0
# What one check_signal call costs before this process has measured it: the whole worker's time per check
# under test_scale_machines' 100 traders x 200 symbols replayed at 10x on a 2-vCPU machine: 130-260 us of
# CPU (44-88% of a core for 3,333 checks a second) before the sandbox's list-method and snapshot changes,
# ~140 us after them (sweeps at 23% of their interval: 1.4 s of both CPUs for 20,000 checks). The high end
# errs towards a scale-up: one too many is a restart the measured scale-down undoes after the cooldown,
# one too few is missed sweeps.
PRIOR_CHECK_CPU_SECS = 260e-6
# Checks a measurement spans at least, so that one sweep's noise does not make the figure.
MIN_MEASURED_CHECKS = 2000
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


class CheckCost:
    """The CPU seconds one check costs this machine: the sandbox processes' CPU (they run checks and nothing
    else, so an idle worker does not inflate it) over the checks made, measured across at least
    MIN_MEASURED_CHECKS; the prior until then."""

    def __init__(self, prior_secs: float = PRIOR_CHECK_CPU_SECS) -> None:
        self.checks = 0  # every check made (the scheduler counts each run's)
        self._secs = prior_secs
        self._mark: tuple[int, dict[int, float]] | None = None  # checks, CPU secs per sandbox pid

    def secs(self, sandbox_pids: list[int]) -> float:
        """The cost per check, measured again once MIN_MEASURED_CHECKS were made since the last time."""
        cpu: dict[int, float] = {}
        for pid in sandbox_pids:
            try:
                cpu[pid] = _cpu_secs(pid)
            except (OSError, IndexError, ValueError):
                continue  # exited while we looked
        if self._mark is None:
            self._mark = (self.checks, cpu)
            return self._secs
        made = self.checks - self._mark[0]
        if made >= MIN_MEASURED_CHECKS:
            # A process new since the mark counts from zero; one that exited drops out (as ProcessLoad).
            used = sum(secs - self._mark[1].get(pid, 0.0) for pid, secs in cpu.items())
            self._secs = max(0.0, used) / made
            self._mark = (self.checks, cpu)
        return self._secs


def predicted_sweep_ratio(checks_by_period: list[tuple[int, int]], check_secs: float, cpus: float,
                          market_rate: float) -> float:  # fmt: skip
    """The sweep ratio (a run's time over its interval, on the market's clock, as SweepLoad measures it) of
    traders given as (checks per run, interval in market seconds), on `cpus` at `check_secs` a check: every
    run at once (the intervals share the UTC grid, so the top of an hour starts them all) against the
    shortest interval. `market_rate` is market seconds per wall second (1 live, the replay's speed)."""
    if not checks_by_period or cpus <= 0:
        return 0.0
    checks = sum(count for count, _ in checks_by_period)
    shortest_secs = min(period for _, period in checks_by_period)
    wall_secs = checks * check_secs / cpus
    return wall_secs * market_rate / shortest_secs if shortest_secs > 0 else 0.0
