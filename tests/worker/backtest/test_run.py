"""Backtests on the real recordings, through the real sandbox, signal engine, executor, paper venue and
position monitor: no look-ahead, exits resolved on the candle path, and a report that adds up."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from worker.backtest.analysts import AnalystTally, DefaultLevels
from worker.backtest.checks import reads_ticker
from worker.backtest.clock import SteppedClock
from worker.backtest.report import BacktestReport, TradeRow
from worker.backtest.run import BacktestSpec, run_backtest
from worker.backtest.store import MemoryTables
from worker.domain.decision import Decision
from worker.domain.enums import AnalysisDecision, SignalStatus, TraderStatus
from worker.domain.money import ZERO, exact
from worker.domain.trader import Trader, TraderRisk
from worker.errors import ConfigError
from worker.market.recordings import SymbolData, load_directory
from worker.market.replay import SymbolMarket
from worker.sandbox import SandboxConfig, SandboxPool
from worker.signals.analysis import Analysis

KLINES = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "klines"
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
RSI_DIP = """def check_signal(symbol, ticker, klines):
    k = klines["1h"]
    if len(get_closes(k)) < 15:
        return False
    return get_latest_rsi(k, 14) < 30
"""


def rsi_trader(**changes: object) -> Trader:
    trader = Trader(
        id=uuid.UUID(int=17), user_id=uuid.UUID(int=1), name="RSI dip", signal_code=RSI_DIP,
        signal_code_version=1, ai_instructions="", timeframes=("1h",), check_interval="1h_close",
        reanalysis_interval="1h_close", symbols=("BTCUSDT",),
        risk=TraderRisk(Decimal(1000), 3, Decimal(500)), status=TraderStatus.ACTIVE, error_message=None,
        updated_at=datetime(2021, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    return replace(trader, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def hourly() -> dict[str, SymbolData]:
    """BTCUSDT's hourly recording alone (2021-04 .. 2023-12)."""
    recorded = load_directory(KLINES, {"BTCUSDT"})["BTCUSDT"]
    return {"BTCUSDT": SymbolData.build("BTCUSDT", {HOUR_MS: recorded.files[HOUR_MS]})}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pool() -> AsyncIterator[SandboxPool]:
    async with SandboxPool(SandboxConfig(processes=1)) as started:
        yield started


async def backtest(
    pool: SandboxPool,
    recordings: dict[str, SymbolData],
    start_ms: int,
    days: float,
    trader: Trader | None = None,
) -> BacktestReport:
    trader = trader or rsi_trader()
    spec = BacktestSpec(trader, ("BTCUSDT",), start_ms, start_ms + int(days * DAY_MS))
    return await run_backtest(
        spec, recordings, pool=pool, analyst=lambda tables, _clock: DefaultLevels(trader, tables)
    )


def first_ms(recordings: dict[str, SymbolData]) -> int:
    return int(recordings["BTCUSDT"].tape.open_time[0])


def decisions(report: BacktestReport, until_ms: int) -> list[tuple[object, ...]]:
    """Every entry and exit made up to `until_ms` (included), as it was made."""
    return [(fill.at_ms, fill.kind, fill.price) for fill in report.fills if fill.at_ms <= until_ms]


def with_future_changed(
    recordings: dict[str, SymbolData], from_ms: int, factor: float
) -> dict[str, SymbolData]:
    """The same recording with every price after `from_ms` scaled by `factor` (the candle opening at
    `from_ms` keeps its open: that is the price at `from_ms` itself)."""
    hourly = recordings["BTCUSDT"].files[HOUR_MS]
    later = hourly.open_time >= from_ms
    opens = np.where(hourly.open_time > from_ms, hourly.open * factor, hourly.open)
    close = np.where(later, hourly.close * factor, hourly.close)
    high = np.where(later, hourly.high * factor, hourly.high)
    low = np.where(later, hourly.low * factor, hourly.low)
    changed = replace(
        hourly,
        open=opens,
        high=np.maximum(high, np.maximum(opens, close)),
        low=np.minimum(low, np.minimum(opens, close)),
        close=close,
    )
    return {"BTCUSDT": SymbolData.build("BTCUSDT", {HOUR_MS: changed})}


@pytest.mark.asyncio(loop_scope="module")
async def test_changing_the_future_changes_no_earlier_decision(
    pool: SandboxPool, hourly: dict[str, SymbolData]
) -> None:
    # A candle opening at the cut is first seen after it (while it forms): a decision taken at the cut
    # itself must not depend on it either. A 30% crash right after the cut would make RSI(14) < 30 there.
    start = first_ms(hourly)
    original = await backtest(pool, hourly, start, 60)
    assert len(original.fills) >= 8, "the window must hold decisions for the comparison to mean anything"
    for cut_day in (15, 30, 45):
        cut_ms = start + cut_day * DAY_MS
        for factor in (0.7, 1.5):
            changed = await backtest(pool, with_future_changed(hourly, cut_ms, factor), start, 60)
            assert decisions(changed, cut_ms) == decisions(original, cut_ms), (cut_day, factor)
            # and the change is seen from the moment it happens on (the comparison is not vacuous)
            assert changed.fills != original.fills


@pytest.mark.asyncio(loop_scope="module")
async def test_stops_and_targets_fill_where_the_candle_path_reaches_them(
    pool: SandboxPool, hourly: dict[str, SymbolData]
) -> None:
    report = await backtest(pool, hourly, first_ms(hourly), 60)
    market = SymbolMarket(hourly["BTCUSDT"])
    exits = [trade for trade in report.closed if trade.close_reason in {"stop_loss", "take_profit"}]
    assert {trade.close_reason for trade in exits} == {"stop_loss", "take_profit"}
    slippage = Decimal("0.0005")
    for trade in exits:
        assert trade.closed_at is not None and trade.exit_price is not None
        at_ms = int(trade.closed_at.timestamp() * 1000)
        level = _level(trade)
        path_price = Decimal(repr(market.price_at(at_ms)))
        before = Decimal(repr(market.price_at(at_ms - 1)))
        # the path reaches the level at this millisecond and not the one before
        if trade.close_reason == "stop_loss":
            assert path_price <= level < before, (trade, path_price, before)
        else:
            assert before < level <= path_price, (trade, path_price, before)
        # the long's exit sells at the price then, less the slippage
        with exact():
            assert trade.exit_price == (path_price * (1 - slippage)).normalize() or abs(
                trade.exit_price - path_price * (1 - slippage)
            ) <= path_price * Decimal("1e-8")


def _level(trade: TradeRow) -> Decimal:
    """The default level the position was opened with (2% stop, 4% target of the entry's reference)."""
    # The entry price includes the slippage paid: the reference price is entry / (1 + slippage).
    reference = trade.entry_price / Decimal("1.0005")
    fraction = Decimal("-0.02") if trade.close_reason == "stop_loss" else Decimal("0.04")
    return (reference * (1 + fraction)).quantize(Decimal("1e-8"))


@pytest.mark.asyncio(loop_scope="module")
async def test_the_report_adds_up(pool: SandboxPool, hourly: dict[str, SymbolData]) -> None:
    report = await backtest(pool, hourly, first_ms(hourly), 90)
    assert report.closed, "the window must close trades"
    with exact():
        pnl = sum((trade.pnl_usd for trade in report.trades), ZERO)
    # every trade's net PnL (fees included) is what the account gained
    assert abs(report.net_pnl_usd - pnl) < Decimal("0.000001"), (report.net_pnl_usd, pnl)
    assert report.per_symbol[0].trades == len(report.trades)
    wins = sum(1 for trade in report.closed if trade.pnl_usd > 0)
    assert report.win_rate == wins / len(report.closed)
    assert Decimal(0) <= report.max_drawdown_percent <= Decimal(100)
    assert 0 < report.exposure < 1
    assert report.sharpe is not None
    # every position is sized by the trader's limit and the 2% / 4% levels
    for trade in report.trades:
        assert trade.entry_price * trade.size <= Decimal(1000) * Decimal("1.001")
    # one entry and one exit per closed trade
    assert len(report.fills) == len(report.closed) * 2 + (len(report.trades) - len(report.closed))


@pytest.mark.asyncio(loop_scope="module")
async def test_a_candle_close_trader_checks_once_per_closed_candle(
    pool: SandboxPool, hourly: dict[str, SymbolData]
) -> None:
    report = await backtest(pool, hourly, first_ms(hourly), 10)
    assert report.check_moments == 10 * 24
    # a trader whose code never matches makes no signal and no trade
    quiet = rsi_trader(signal_code="def check_signal(symbol, ticker, klines):\n    return False\n")
    nothing = await backtest(pool, hourly, first_ms(hourly), 10, quiet)
    assert (nothing.signals, nothing.trades, nothing.net_pnl_usd) == (0, [], ZERO)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_symbol_without_recordings_is_refused(
    pool: SandboxPool, hourly: dict[str, SymbolData]
) -> None:
    trader = rsi_trader(symbols=("DOGEUSDT",))
    spec = BacktestSpec(trader, ("DOGEUSDT",), first_ms(hourly), first_ms(hourly) + DAY_MS)
    with pytest.raises(ConfigError, match="DOGEUSDT"):
        await run_backtest(
            spec, hourly, pool=pool, analyst=lambda tables, _clock: DefaultLevels(trader, tables)
        )


def test_only_code_that_names_its_ticker_is_given_one() -> None:
    assert not reads_ticker(RSI_DIP)
    assert reads_ticker("def check_signal(symbol, ticker, klines):\n    return ticker['lastPrice'] > 1\n")
    renamed = "def check_signal(s, t, k):\n    def inner():\n        return t\n    return inner() is None\n"
    assert reads_ticker(renamed)
    assert reads_ticker("def check_signal(*arguments):\n    return False\n")


@pytest.mark.asyncio(loop_scope="module")
async def test_code_that_reads_the_ticker_sees_the_replayed_one(
    pool: SandboxPool, hourly: dict[str, SymbolData]
) -> None:
    # the ticker's last price is the next candle's open, next to the close of the candle that just closed
    # (a missing or wrong ticker fails the code, and no trade would be the same)
    checked = RSI_DIP.replace(
        "    return get_latest_rsi(k, 14) < 30",
        "    assert abs(ticker['lastPrice'] / get_closes(k)[-1] - 1) < 0.05, 'ticker'\n"
        "    return ticker['priceChange24h'] < 1000 and get_latest_rsi(k, 14) < 30",
    )
    plain = await backtest(pool, hourly, first_ms(hourly), 30)
    reading = await backtest(pool, hourly, first_ms(hourly), 30, rsi_trader(signal_code=checked))
    assert reads_ticker(checked) and plain.fills
    assert reading.fills == plain.fills


class _WatchingAnalyst:
    """Keeps every signal watching and notes, at each re-analysis, the market time and the newest candle
    open time the market data carried (who judges is the backtest's seam; the model is not the subject)."""

    def __init__(self, tables: MemoryTables, clock: SteppedClock) -> None:
        self._tables, self._clock = tables, clock
        self.reanalyses: list[tuple[int, int]] = []
        self.tally = AnalystTally()

    async def analyze(
        self,
        trader_id: uuid.UUID,
        signal_id: uuid.UUID,
        market_data: dict[str, Any],
        *,
        request_id: uuid.UUID | None = None,
    ) -> Analysis:
        if self._tables.signals.rows[signal_id].status is SignalStatus.WATCHING:
            self.reanalyses.append((self._clock.now_ms(), int(market_data["klines"]["1h"][-1][0])))
        decision = Decision(AnalysisDecision.WATCH, "watching", 50)
        self.tally.count(decision)
        analysis_id = uuid.uuid4()
        return Analysis(decision, analysis_id, request_id or analysis_id, replayed=False, attempts=1)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_reanalysis_sees_every_candle_closed_before_it(
    pool: SandboxPool, hourly: dict[str, SymbolData]
) -> None:
    # A watching signal is re-analysed at every hourly re-analysis moment (5 s after each close), while
    # check_signal acts rarely: the candles must be as a live store holds them then (up to the close 5 s
    # before, and the candle forming since), not as they were at the last moment the backtest visited.
    trader = rsi_trader()
    analysts: list[_WatchingAnalyst] = []

    def analyst(tables: MemoryTables, clock: SteppedClock) -> _WatchingAnalyst:
        analysts.append(_WatchingAnalyst(tables, clock))
        return analysts[-1]

    start = first_ms(hourly)
    spec = BacktestSpec(trader, ("BTCUSDT",), start, start + 20 * DAY_MS, ai="standin")
    await run_backtest(spec, hourly, pool=pool, analyst=analyst)

    reanalyses = analysts[0].reanalyses
    assert len(reanalyses) > 100
    opens = hourly["BTCUSDT"].tape.open_time
    for at_ms, newest_open_ms in reanalyses:
        assert at_ms % HOUR_MS == 5_000
        # the candle forming since the close 5 s before (in a gap of the recording: the last one recorded)
        forming = int(opens[np.searchsorted(opens, at_ms - 5_000, side="right") - 1])
        assert newest_open_ms == forming, (at_ms, newest_open_ms)
