"""Klines over REST against the exchange simulator: the recorded candles, and Binance's errors mapped."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devstack.exchange.server import ExchangeSimulator
from tests.worker.market.conftest import START_MS
from worker.errors import ConfigError, RateLimited, TransientError
from worker.market.rest import BinanceKlineSource

MINUTE_MS = 60_000


async def test_klines_are_the_recorded_candles_oldest_first(fast_simulator: ExchangeSimulator) -> None:
    source = BinanceKlineSource(fast_simulator.url)
    try:
        candles = await source.fetch_klines("BTCUSDT", "1m", start_ms=START_MS - 10 * MINUTE_MS, limit=5)
        newest = await source.fetch_klines("BTCUSDT", "1m", start_ms=None, limit=3)
    finally:
        await source.close()
    market = fast_simulator.markets["BTCUSDT"]
    recorded = market.klines(MINUTE_MS, START_MS, start_ms=START_MS - 10 * MINUTE_MS, limit=5)
    assert [c.open_time for c in candles] == [row.open_time for row in recorded]
    assert [c.close for c in candles] == [float(row.rest_row()[4]) for row in recorded]
    assert len(newest) == 3 and newest[0].open_time < newest[1].open_time < newest[2].open_time


async def test_binance_errors_become_the_worker_errors(fast_simulator: ExchangeSimulator) -> None:
    source = BinanceKlineSource(fast_simulator.url)
    try:
        fast_simulator.faults.update({"reject_status": 429, "reject_count": 1, "retry_after_secs": 7})
        with pytest.raises(RateLimited) as limited:
            await source.fetch_klines("BTCUSDT", "1m", start_ms=None, limit=3)
        assert limited.value.retry_after_secs == 7.0
        with pytest.raises(ConfigError, match="code=-1121"):
            await source.fetch_klines("NOSUCHUSDT", "1m", start_ms=None, limit=3)
    finally:
        await source.close()
    unreachable = BinanceKlineSource("http://127.0.0.1:9")
    try:
        with pytest.raises(TransientError):
            await unreachable.fetch_klines("BTCUSDT", "1m", start_ms=None, limit=3)
    finally:
        await unreachable.close()


def test_a_paper_worker_never_imports_python_binance() -> None:
    # Everything `python -m worker` imports before it knows the venue (~14 MB less resident on paper).
    probe = (
        "import sys, worker.__main__, worker.app\n"
        "print(sorted(m for m in sys.modules if m.startswith('binance')))"
    )
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
