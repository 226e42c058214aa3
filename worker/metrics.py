"""Counters and gauges the worker reports on /metrics, kept cheap enough to update on every check."""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from worker.load import CheckCost, ProcessLoad, SweepLoad

HOUR_SECS = 3600.0


class HourlyCounter:
    """Counts events over the last hour, in one-minute buckets (memory stays bounded at 60 buckets)."""

    def __init__(self) -> None:
        self._buckets: deque[list[float]] = deque()  # [minute_start_monotonic, count]

    def add(self, count: int = 1, now_monotonic: float | None = None) -> None:
        now = time.monotonic() if now_monotonic is None else now_monotonic
        minute = now - (now % 60)
        if self._buckets and self._buckets[-1][0] == minute:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([minute, float(count)])
        self._prune(now)

    def last_hour(self, now_monotonic: float | None = None) -> int:
        now = time.monotonic() if now_monotonic is None else now_monotonic
        self._prune(now)
        return int(sum(count for _, count in self._buckets))

    def _prune(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] <= now - HOUR_SECS:
            self._buckets.popleft()


@dataclass
class TraderMetrics:
    """One trader's signal engine figures since the worker started (the HTTP API reports them)."""

    runs: int = 0
    checks: int = 0  # check_signal calls (one per symbol evaluated)
    matches: int = 0
    errors: int = 0  # per-symbol check failures, and runs that failed as a whole
    stale_symbols: int = 0  # symbols skipped because their data was missing or stale
    signals_created: int = 0
    already_live: int = 0  # matches skipped: a signal for the symbol is still live
    cooldown_skipped: int = 0
    budget_skipped: int = 0  # matches skipped: the trader's analysis budget was used up
    analyses: int = 0
    analysis_failures: int = 0
    reanalyses: int = 0  # re-analysis runs finished, failed ones included
    last_reanalysis_at: datetime | None = None  # market time
    last_run_at: datetime | None = None
    last_run_duration_ms: float | None = None
    last_trigger: str | None = None
    last_error: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "runs": self.runs,
            "checks": self.checks,
            "matches": self.matches,
            "errors": self.errors,
            "staleSymbols": self.stale_symbols,
            "signalsCreated": self.signals_created,
            "alreadyLive": self.already_live,
            "cooldownSkipped": self.cooldown_skipped,
            "budgetSkipped": self.budget_skipped,
            "analyses": self.analyses,
            "analysisFailures": self.analysis_failures,
            "reanalyses": self.reanalyses,
            "lastReanalysisAt": _rfc3339(self.last_reanalysis_at),
            "lastRunAt": _rfc3339(self.last_run_at),
            "lastRunDurationMs": (
                round(self.last_run_duration_ms, 3) if self.last_run_duration_ms is not None else None
            ),
            "lastTrigger": self.last_trigger,
            "lastError": self.last_error,
        }


def _rfc3339(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


@dataclass
class WorkerMetrics:
    """Shared by the components that produce the figures and the HTTP API that reports them."""

    active_traders: int = 0
    open_positions: int = 0
    watching_signals: int = 0
    websocket_status: str = "not_started"
    last_kline_update: datetime | None = None
    signals_checked: HourlyCounter = field(default_factory=HourlyCounter)
    signals_triggered: HourlyCounter = field(default_factory=HourlyCounter)
    # Per trader id (str), kept while the trader is scheduled.
    traders: dict[str, TraderMetrics] = field(default_factory=dict)
    # Load, for scale-machines: signal runs against their interval, and the process tree's CPU and memory.
    sweeps: SweepLoad = field(default_factory=SweepLoad)
    process: ProcessLoad = field(default_factory=ProcessLoad)
    check_cost: CheckCost = field(default_factory=CheckCost)
    # The sweep ratio predicted for every trader while some are held for scale-machines' answer (the
    # sizing gate); None otherwise, and scale-machines goes by what it measures.
    predicted_sweep_ratio: float | None = None
    # The machine's memory (Fly's FLY_VM_MEMORY_MB); None when not on a machine.
    memory_limit_mb: int | None = None
    # Process start (the kernel's clock, so interpreter start-up and imports count) to /health answering,
    # and the CPU this process used by then (what the start-up costs whatever else the machine runs).
    startup_secs: float | None = None
    startup_cpu_secs: float | None = None

    def trader(self, trader_id: str) -> TraderMetrics:
        """The trader's metrics, created on first use."""
        found = self.traders.get(trader_id)
        if found is None:
            found = self.traders[trader_id] = TraderMetrics()
        return found


def resident_memory_mb() -> float:
    """This process's resident set size in MiB (VmRSS), 0 where /proc is not available."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def process_age_secs() -> float | None:
    """Seconds since the kernel started this process (10 ms resolution); None where /proc is not available."""
    try:
        # Field 22 of /proc/self/stat, after the parenthesised command name: start time in clock ticks since
        # boot, on the same clock as CLOCK_BOOTTIME.
        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        started_secs = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started_secs)
    except (OSError, ValueError, IndexError, AttributeError):
        return None
