"""The dry run: bundled candles built from the recordings, every timeframe, and a verdict that names why."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio

from tests.worker.sandbox import recorded
from tests.worker.sandbox.hostile import body
from worker.domain.intervals import INTERVAL_MS
from worker.market.store import DEFAULT_CAPACITY
from worker.sandbox import SandboxConfig, SandboxPool, SignalRunner, SignalRuntimeError, compile_signal
from worker.sandbox.dry_run import DATA_PATH, build, dry_run, ticker, windows
from worker.sandbox.dry_run import recorded as bundled


def test_the_bundled_candles_are_built_from_the_recordings() -> None:
    rebuilt = build(recorded.data_dir())
    with np.load(DATA_PATH, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(rebuilt), (
            "run `python -m worker.sandbox.dry_run ../shared/data/klines`"
        )
        for name, values in rebuilt.items():
            assert np.array_equal(archive[name], values), name


def test_every_timeframe_has_a_full_window_on_its_own_grid() -> None:
    series = bundled()

    assert list(series) == list(INTERVAL_MS)
    for timeframe, klines in series.items():
        assert len(klines) >= DEFAULT_CAPACITY - 1, timeframe  # 1d: the 1h recording spans 999 days
        steps = np.diff(klines.open_time)
        assert (steps % INTERVAL_MS[timeframe] == 0).all() and (steps > 0).all(), timeframe
        assert (klines.high >= klines.low).all() and (klines.close > 0).all(), timeframe


def test_windows_differ_by_symbol_and_round_and_tickers_follow_them() -> None:
    first = windows(["5m", "1h"], ["A", "B"], 0)
    second = windows(["5m", "1h"], ["A", "B"], 1)

    assert len(first["A"]["5m"]) == DEFAULT_CAPACITY
    assert (
        first["A"]["5m"].close[-1] != first["B"]["5m"].close[-1]
        or first["A"]["1h"].close[-1] != (first["B"]["1h"].close[-1])
    )
    assert first["A"]["1h"].open_time[-1] != second["A"]["1h"].open_time[-1]
    quote = ticker(first["A"])
    assert quote["lastPrice"] == first["A"]["5m"].close[-1]
    assert set(quote) >= {"lastPrice", "volume24h", "priceChange24h", "bidPrice", "askPrice"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runner() -> AsyncIterator[SignalRunner]:
    async with SandboxPool(SandboxConfig(processes=1, default_deadline_ms=200)) as pool:
        yield SignalRunner(pool)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_failing_program_is_reported_with_its_line(runner: SignalRunner) -> None:
    code = body("closes = get_closes(klines['4h'])", "return closes[-5000] > 0")

    report = await dry_run(runner, compile_signal(code), ["4h"], ["BTCUSDT", "ETHUSDT"])

    assert not report.ok and set(report.errors) == {"BTCUSDT", "ETHUSDT"}
    assert report.problem().startswith(
        "check_signal failed on recorded candles in 2 of 6 checks: BTCUSDT: line 3"
    )
    assert "IndexError" in report.problem()


@pytest.mark.asyncio(loop_scope="module")
async def test_an_undeclared_timeframe_fails_and_a_runaway_is_stopped(runner: SignalRunner) -> None:
    undeclared = await dry_run(
        runner, compile_signal(body("return klines['1h'] is None")), ["15m"], ["BTCUSDT"]
    )
    with pytest.raises(SignalRuntimeError, match="deadline"):
        await dry_run(runner, compile_signal(body("while True:", "    pass")), ["1m"], ["BTCUSDT"])
    with pytest.raises(ValueError, match="no recorded candles for timeframe"):
        await dry_run(runner, compile_signal(body("return False")), ["1w"], ["BTCUSDT"])

    assert "KeyError: '1h'" in undeclared.problem()
