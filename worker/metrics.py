"""Counters and gauges the worker reports on /metrics, kept cheap enough to update on every check."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

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
class WorkerMetrics:
    """Shared by the components that produce the figures and the HTTP API that reports them."""

    active_traders: int = 0
    open_positions: int = 0
    watching_signals: int = 0
    websocket_status: str = "not_started"
    last_kline_update: datetime | None = None
    signals_checked: HourlyCounter = field(default_factory=HourlyCounter)
    signals_triggered: HourlyCounter = field(default_factory=HourlyCounter)


def resident_memory_mb() -> float:
    """This process's resident set size in MiB (VmRSS), 0 where /proc is not available."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
