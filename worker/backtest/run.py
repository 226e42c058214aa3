"""A backtest: the worker's own signal run and trading, driven moment by moment over the recorded market.

The parts are the live ones, built by the same composition functions: the signal engine (cooldowns,
budget, the match -> signal -> analysis -> decision pipeline), the trade executor with its order flow,
paper venue, guardrails and position monitor, and re-analysis. What differs is only where they stand:
the database is in memory (store.py), the market is the replay (market.py), the clock is stepped
(clock.py), and check_signal is evaluated for every moment beforehand in the sandbox (checks.py).

At each moment, in this order (the order a live worker sees the same moment in, see the README):
1. prices: the ticker of every symbol with a position or something due now; the monitor closes what they
   trigger;
2. re-analysis due now, on the candles as they stood the instant before this moment;
3. candles: every closed candle and the one forming now; then the checks due now (candle closes, timers;
   only those where check_signal did more than say no for some symbol: at the others the run does nothing).
After each decision the monitor sweeps the positions at the current price, as its guard does every second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Final

import numpy as np
import numpy.typing as npt

from worker.app import build_trading
from worker.backtest.checks import ReplayChecks
from worker.backtest.clock import SteppedClock
from worker.backtest.market import BacktestMarket
from worker.backtest.report import (
    BacktestReport,
    drawdown,
    fills,
    per_symbol,
    sharpe,
    trade_rows,
)
from worker.backtest.store import MemoryTables
from worker.clock import LiveClock
from worker.domain.enums import TraderStatus, TradingMode
from worker.domain.intervals import CLOSE_FALLBACK_SECS, parse_interval
from worker.domain.positions import TrailingMode
from worker.domain.trader import Trader
from worker.domain.universe import trader_timeframes
from worker.errors import ConfigError
from worker.market.recordings import SymbolData
from worker.market.store import DEFAULT_CAPACITY, KlineStore
from worker.market.tickers import TickerStore
from worker.sandbox import SandboxPool, SignalRunner
from worker.signals.analysis import AnalysisBudget, AnalysisSettings
from worker.signals.engine import Analyst, EngineSettings, SignalEngine
from worker.trading.config import TradingConfig
from worker.trading.venue import PaperVenue

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
# Check moments per symbol a backtest takes on (a `1s` timer over a year would be 31 million).
MAX_CHECK_MOMENTS: Final = 2_000_000
DEFAULT_BALANCE_USD: Final = Decimal(10_000)  # the paper account's default starting balance


@dataclass(frozen=True, slots=True)
class BacktestSpec:
    trader: Trader
    symbols: tuple[str, ...]
    start_ms: int
    end_ms: int
    fee_rate: Decimal = Decimal("0.001")
    slippage_rate: Decimal = Decimal("0.0005")
    starting_balance_usd: Decimal = DEFAULT_BALANCE_USD
    ai: str = "off"  # off | standin | gemini: without a model there is no re-analysis


# (phase, done, total): "checks" while check_signal is evaluated, "trading" while the market is replayed.
Progress = Callable[[str, int, int], None]
AnalystFactory = Callable[[MemoryTables, SteppedClock], Analyst]


async def run_backtest(
    spec: BacktestSpec,
    recordings: Mapping[str, SymbolData],
    *,
    pool: SandboxPool,
    analyst: AnalystFactory,
    progress: Progress | None = None,
) -> BacktestReport:
    """Replay `spec` over `recordings` (raises ConfigError for a spec the data cannot serve,
    SignalCodeError, SignalRuntimeError, and AnalysisFailed when a model's analysis failed)."""
    missing = [symbol for symbol in spec.symbols if symbol not in recordings]
    if missing:
        raise ConfigError(f"no recorded candles for {', '.join(missing)}")
    if spec.end_ms <= spec.start_ms:
        raise ConfigError("the backtest's end must come after its start")
    started = time.perf_counter()
    backtest = _Backtest(
        spec, {symbol: recordings[symbol] for symbol in spec.symbols}, pool, analyst, progress
    )
    report = await backtest.run()
    return replace(report, elapsed_secs=time.perf_counter() - started)


class _Backtest:
    def __init__(
        self,
        spec: BacktestSpec,
        recordings: Mapping[str, SymbolData],
        pool: SandboxPool,
        analyst: AnalystFactory,
        progress: Progress | None,
    ) -> None:
        self.spec = spec
        self.trader = replace(
            spec.trader, symbols=spec.symbols, status=TraderStatus.ACTIVE, trading_mode=TradingMode.PAPER
        )
        self.clock = SteppedClock(spec.start_ms)
        self.tables = MemoryTables(self.clock, spec.starting_balance_usd)
        self.market = BacktestMarket(recordings, KlineStore(DEFAULT_CAPACITY), TickerStore())
        self.analyst = analyst(self.tables, self.clock)
        config = self.trading_config = TradingConfig(
            paper_fee_rate=spec.fee_rate, paper_slippage_rate=spec.slippage_rate
        )
        venue = PaperVenue(spec.fee_rate, spec.slippage_rate, self.tables.trading.paper_balance)
        wall = LiveClock()
        self.trading = build_trading(
            config, self.tables, venue, tickers=self.market.tickers, klines=self.market.klines,
            analyzer=self.analyst, clock=self.clock, wall=wall,
        )  # fmt: skip
        self.checks = ReplayChecks(SignalRunner(pool), self.market, self.clock.now_ms)
        self.engine = SignalEngine(
            self.checks,
            klines=self.market.klines,
            tickers=self.market.tickers,
            signals=self.tables.signals,
            analysis=self.analyst,
            budget=AnalysisBudget(AnalysisSettings(functions_url="").calls_per_hour, self.clock.monotonic),
            executor=self.trading.executor,
            settings=EngineSettings(default_symbols=spec.symbols, analysis_concurrency=1),
            clock=wall,
            market=self.clock,
        )
        self.progress = progress
        self.timeframes = trader_timeframes(self.trader)
        self.equity: list[tuple[int, Decimal]] = []
        self.moments = 0
        self.open_ms = 0

    # Moments ------------------------------------------------------------------------------------------
    def check_times(self) -> tuple[IntArray, str]:
        interval = parse_interval(self.trader.check_interval)
        spec = self.spec
        if interval.timeframe is not None:
            closes = [
                self.market.close_times(symbol, interval.timeframe, spec.start_ms, spec.end_ms)
                for symbol in spec.symbols
            ]
            return np.unique(np.concatenate(closes)), "candle_close"
        return _grid(interval.period_secs, 0.0, spec.start_ms, spec.end_ms), "timer"

    def reanalysis_times(self) -> IntArray:
        if self.spec.ai == "off":
            return np.empty(0, dtype=np.int64)
        interval = parse_interval(self.trader.reanalysis_interval)
        offset = CLOSE_FALLBACK_SECS if interval.on_close else 0.0
        return _grid(interval.period_secs, offset, self.spec.start_ms, self.spec.end_ms)

    # Running -----------------------------------------------------------------------------------------
    async def run(self) -> BacktestReport:
        checks, trigger = self.check_times()
        if len(checks) > MAX_CHECK_MOMENTS:
            raise ConfigError(
                f"{len(checks)} check moments is more than a backtest takes on ({MAX_CHECK_MOMENTS}): "
                f"choose a shorter --from/--to for a {self.trader.check_interval} trader"
            )
        await self._evaluate_checks(checks)
        self.engine.activate(self.trader)
        async with asyncio.TaskGroup() as group:
            workers = group.create_task(self.engine.run(), name="backtest-signal-engine")
            try:
                acting = np.asarray(self.checks.acting_moments(), dtype=np.int64)
                await self._replay(acting, trigger, self.reanalysis_times())
            finally:
                workers.cancel()
        if (failure := self._analyst_failure()) is not None:
            raise failure
        return self._report(len(checks))

    async def _evaluate_checks(self, times: IntArray) -> None:
        per_symbol_times: list[tuple[str, list[int]]] = []
        interval = parse_interval(self.trader.check_interval)
        for symbol in self.spec.symbols:
            if interval.timeframe is not None:
                own = self.market.close_times(
                    symbol, interval.timeframe, self.spec.start_ms, self.spec.end_ms
                )
                per_symbol_times.append((symbol, own.tolist()))
            else:
                per_symbol_times.append((symbol, times.tolist()))
        total = sum(len(moments) for _, moments in per_symbol_times)
        done = 0

        def advanced(count: int) -> None:
            nonlocal done
            done += count
            if self.progress is not None:
                self.progress("checks", done, total)

        async with asyncio.TaskGroup() as group:
            for symbol, moments in per_symbol_times:
                group.create_task(self.checks.evaluate(self.trader, [symbol], moments, advanced))

    async def _replay(self, checks: IntArray, trigger: str, reanalyses: IntArray) -> None:
        spec, market, positions = self.spec, self.market, self.trading.positions
        next_check = next_reanalysis = 0
        at = spec.start_ms
        last_report = 0.0
        while True:
            held = sorted({position.symbol for position in positions.all()})
            candidates = [int(checks[next_check])] if next_check < len(checks) else []
            candidates += [int(reanalyses[next_reanalysis])] if next_reanalysis < len(reanalyses) else []
            candidates += [v for symbol in held if (v := market.next_vertex(symbol, at)) is not None]
            if not candidates or min(candidates) > spec.end_ms:
                break
            moment = min(candidates)
            for symbol in held:
                crossing = market.first_crossing(symbol, at, moment, self.trading.monitor.levels(symbol))
                if crossing is not None:
                    moment = min(moment, crossing)
            if held:
                self.open_ms += moment - at
            at = moment
            self.clock.step_to(at)
            self.moments += 1
            check_due = next_check < len(checks) and checks[next_check] == at
            reanalysis_due = next_reanalysis < len(reanalyses) and reanalyses[next_reanalysis] == at
            due = check_due or reanalysis_due
            # 1. prices (the 24 h figures only where something due now reads them)
            for symbol in self.spec.symbols if due else held:
                (market.publish_ticker if due else market.publish_price)(symbol, at)
            await self._settle(sweep=False)
            # 2. re-analysis, on the candles as they stood the instant before (a live store's then: every
            #    candle closed by then and the one forming), not at the last moment the replay visited
            if reanalysis_due:
                next_reanalysis += 1
                self._publish_candles(at - 1)
                await self.trading.reanalyzer.run(self.trader)
                await self._settle()
            # 3. candles, then the checks (candles are read only at checks, re-analyses and ATR stops)
            if due or self.trading_config.trailing_mode is TrailingMode.ATR:
                self._publish_candles(at)
            if check_due:
                next_check += 1
                await self.engine.run_trader(self.trader, trigger, fresh_after=0.0)
                await self.engine.drain()
                await self._settle()
            if self._analyst_failure() is not None:
                return
            self._sample(at, held=bool(held))
            if self.progress is not None and time.perf_counter() - last_report > 0.1:
                last_report = time.perf_counter()
                self.progress("trading", at - spec.start_ms, spec.end_ms - spec.start_ms)
        if self.progress is not None:
            self.progress("trading", spec.end_ms - spec.start_ms, spec.end_ms - spec.start_ms)
        self.clock.step_to(max(at, spec.end_ms))

    def _analyst_failure(self) -> Exception | None:
        """A model's failed analysis, which ends the backtest (live, the signal would close and trading go
        on: a result with some signals judged and others dropped would not be the strategy's)."""
        return getattr(self.analyst, "failure", None)

    def _publish_candles(self, at_ms: int) -> None:
        for symbol in self.spec.symbols:
            for timeframe in self.timeframes:
                self.market.publish_klines(symbol, timeframe, at_ms)

    async def _settle(self, *, sweep: bool = True) -> None:
        """The position guard's part: a sweep at the current prices (after a decision), then every exit."""
        if sweep:
            self.trading.monitor.sweep()
        await self.trading.guard.close_triggered()

    def _marks(self) -> dict[str, Decimal]:
        return {
            symbol: ticker.last_price
            for symbol in self.spec.symbols
            if (ticker := self.market.tickers.get(symbol)) is not None
        }

    def _sample(self, at_ms: int, *, held: bool) -> None:
        """The equity at this moment, whenever a position is open or has just closed."""
        if held or len(self.trading.positions):
            equity = self.tables.trading.equity_usd(self._marks())
            if not self.equity or self.equity[-1][1] != equity:
                self.equity.append((at_ms, equity))

    def _report(self, check_moments: int) -> BacktestReport:
        spec, marks = self.spec, self._marks()
        trades = trade_rows(self.tables, marks)
        final = self.tables.trading.equity_usd(marks)
        equity = [(spec.start_ms, spec.starting_balance_usd), *self.equity, (spec.end_ms, final)]
        worst_usd, worst_percent = drawdown(equity)
        tally = getattr(self.analyst, "tally", None)
        return BacktestReport(
            trader_name=self.trader.name,
            symbols=spec.symbols,
            start_ms=spec.start_ms,
            end_ms=spec.end_ms,
            ai=spec.ai,
            fee_rate=spec.fee_rate,
            slippage_rate=spec.slippage_rate,
            starting_balance_usd=spec.starting_balance_usd,
            final_equity_usd=final,
            trades=trades,
            fills=fills(self.tables),
            per_symbol=per_symbol(trades, spec.symbols),
            signals=len(self.tables.signals.rows),
            analyses=getattr(tally, "analyses", 0),
            decisions=dict(getattr(tally, "decisions", {})),
            max_drawdown_usd=worst_usd,
            max_drawdown_percent=worst_percent,
            sharpe=sharpe(equity),
            exposure=self.open_ms / (spec.end_ms - spec.start_ms),
            equity=equity,
            moments=self.moments,
            check_moments=check_moments,
        )


def _grid(period_secs: float, offset_secs: float, start_ms: int, end_ms: int) -> IntArray:
    """Every instant of the UTC grid of `period_secs` (+ `offset_secs`) within (start_ms, end_ms]."""
    period_ms, offset_ms = int(period_secs * 1000), int(offset_secs * 1000)
    first = (start_ms - offset_ms) // period_ms * period_ms + offset_ms
    if first <= start_ms:
        first += period_ms
    return np.arange(first, end_ms + 1, period_ms, dtype=np.int64)
