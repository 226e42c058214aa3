"""Shared builders for the sandbox tests: snapshots of recorded candles and a reporter that remembers."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.worker.sandbox import recorded
from worker.market.klines import Klines


@dataclass
class RecordingReporter:
    """A TraderErrorReporter that keeps what it was told (the PostgREST one is tested in test_reporting)."""

    reports: dict[str, list[str]] = field(default_factory=dict)

    async def report_trader_error(self, trader_id: str, message: str) -> None:
        self.reports.setdefault(trader_id, []).append(message)


def btc_windows(count: int, length: int = 300, step: int = 97) -> dict[str, dict[str, Klines]]:
    """`count` symbols, each a different window of recorded BTCUSDT 1h candles."""
    series = recorded.load("BTCUSDT", "1h")
    return {
        f"W{index:04d}USDT": {"1h": recorded.window(series, length + index * step, length)}
        for index in range(count)
    }
