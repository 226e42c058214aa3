"""The signal run for one trader, and the pipeline that turns each match into an analysed signal.

`run(trader, trigger)` is what a scheduler job calls: fresh symbols only (stale ones skipped and counted),
one sandbox sweep, then each match that is not cooling down, already live or over the trader's analysis
budget goes on a bounded queue. The engine's own workers (under its TaskGroup, `analysis_concurrency` of
them) take a match through: insert the `signals` row -> analyze-signal -> schema-checked decision ->
DecisionExecutor. A run therefore never waits for the model, and a slow analysis never delays checks.

What happens to a signal that gets no decision applied (decided here, tested in tests/worker/signals):
- the analysis fails for good (budget, refusal, invalid answer, retries exhausted): closed at once with
  `close_reason` "analysis failed (<kind>): ...";
- the trader is paused or removed before its decision was applied: closed, "trader stopped ...";
- the worker stops or crashes mid-analysis, or the executor leaves the signal `new`: the stranded sweep
  closes it ("stranded: ...") - at start for every `new` signal older than the start, then periodically
  for `new` signals older than `stranded_after_secs` that no worker of this process is handling.
Closing is conditional on the status still being `new`, so a signal the executor moved on is never touched.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Protocol

from worker.clock import Clock, LiveClock
from worker.components import ComponentState
from worker.db.signals import InsertOutcome, SignalStore
from worker.domain.decision import Decision
from worker.domain.signal import SignalContext
from worker.domain.trader import Trader
from worker.domain.universe import trader_symbols, trader_timeframes
from worker.errors import ConfigError, InvariantViolation, TransientError, WorkerError
from worker.market.messages import Ticker
from worker.market.store import KlineStore
from worker.market.tickers import TickerStore
from worker.metrics import TraderMetrics, WorkerMetrics
from worker.retry import Backoff, retry
from worker.sandbox import SignalCodeError, SignalProgram, SignalRuntimeError, SweepResult
from worker.signals.analysis import Analysis, AnalysisBudget, AnalysisFailed
from worker.signals.checks import SignalChecks
from worker.signals.market_data import ANALYSIS_KLINES, build_market_data

logger = logging.getLogger(__name__)

_QUEUE_SIZE: Final = 1000
_SWEEP_RETRY: Final = Backoff(base_secs=0.05, max_secs=0.5)


class Analyst(Protocol):
    """Who judges a signal (analyze-signal's client; a backtest's stand-in for the model)."""

    async def analyze(
        self,
        trader_id: uuid.UUID,
        signal_id: uuid.UUID,
        market_data: dict[str, Any],
        *,
        request_id: uuid.UUID | None = None,
    ) -> Analysis:
        """The validated decision for the signal (raises AnalysisFailed)."""
        ...


class DecisionExecutor(Protocol):
    """Who acts on the decisions (the trading executor)."""

    async def execute(self, context: SignalContext, decision: Decision) -> None:
        """Act on `decision` for the signal (idempotent per analysis_id: a retry must not act twice)."""
        ...

    def record_analysis_failure(self, trader_id: uuid.UUID, reason: str = "") -> None:
        """Count an analysis that failed for good (consecutive failures put the trader in safe mode)."""
        ...


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """The signal run's slice of the worker settings."""

    default_symbols: tuple[str, ...]
    cooldown_secs: float = 300.0  # per trader and symbol, from the signal's creation
    stale_after_secs: float = 60.0  # a series not updated for this long is skipped
    deadline_ms: float | None = None  # per check; None: the sandbox pool's default
    analysis_concurrency: int = 4
    analysis_klines: int = ANALYSIS_KLINES
    stranded_after_secs: float = 900.0
    stranded_sweep_secs: float = 60.0


@dataclass(frozen=True, slots=True)
class RunReport:
    """What one run of a trader did (also folded into its TraderMetrics)."""

    trader_id: uuid.UUID
    trigger: str
    started_at: datetime  # wall clock
    duration_ms: float
    checked: int
    matches: tuple[str, ...]
    errors: dict[str, str]
    stale: tuple[str, ...]
    queued: tuple[str, ...]  # matches sent on to become signals
    failure: str | None = None  # the run as a whole failed (code rejected or stopped, no sandbox)
    market_time: datetime | None = None  # when it started on the market clock


@dataclass(frozen=True, slots=True)
class _Match:
    trader: Trader
    symbol: str
    trigger_price: Decimal
    market_data: dict[str, Any]


class SignalEngine:
    """Runs traders' checks and owns the match -> signal -> analysis -> executor pipeline (a Component)."""

    name = "signal-engine"

    def __init__(
        self,
        checks: SignalChecks,
        *,
        klines: KlineStore,
        tickers: TickerStore,
        signals: SignalStore,
        analysis: Analyst,
        budget: AnalysisBudget,
        executor: DecisionExecutor,
        settings: EngineSettings,
        metrics: WorkerMetrics | None = None,
        clock: Clock | None = None,
        market: Clock | None = None,
    ) -> None:
        self._checks = checks
        self._klines = klines
        self._tickers = tickers
        self._signals = signals
        self._analysis = analysis
        self._budget = budget
        self._executor = executor
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self._clock = clock or LiveClock()
        # Market time: cooldowns, staleness and the runs' times (the wall clock: the stranded sweep).
        self._market = market or self._clock
        self._active: dict[uuid.UUID, Trader] = {}
        self._queue: asyncio.Queue[_Match] = asyncio.Queue(maxsize=_QUEUE_SIZE)
        self._in_flight: set[tuple[uuid.UUID, str]] = set()
        self._in_flight_signals: set[uuid.UUID] = set()
        self._last_signal: dict[tuple[uuid.UUID, str], float] = {}  # market seconds of creation
        self._cooldown_seeded: set[uuid.UUID] = set()
        self._state = ComponentState.STARTING
        self._accepting = True
        self._started_at = self._clock.now()

    # Which traders may create signals ------------------------------------------------------------------
    async def prepare(self, trader: Trader) -> SignalProgram | None:
        """Compile the trader's code (reported as broken when rejected); None when it cannot run."""
        try:
            return await self._checks.load(trader)
        except SignalCodeError as error:
            logger.warning("signal code rejected trader_id=%s error=%s", trader.id, error)
            self.metrics.trader(str(trader.id)).last_error = f"signal code rejected: {error}"
            return None

    def activate(self, trader: Trader) -> None:
        """Let the trader's runs create signals (the latest definition wins)."""
        self._active[trader.id] = trader

    def deactivate(self, trader_id: uuid.UUID, *, forget: bool = False) -> None:
        """Stop the trader from creating signals or applying decisions; `forget` drops its state too."""
        self._active.pop(trader_id, None)
        if forget:
            self._checks.forget(trader_id)
            self._budget.forget(str(trader_id))
            self._cooldown_seeded.discard(trader_id)
            self.metrics.traders.pop(str(trader_id), None)
            for key in [key for key in self._last_signal if key[0] == trader_id]:
                del self._last_signal[key]

    def is_active(self, trader_id: uuid.UUID) -> bool:
        return trader_id in self._active

    # The run ------------------------------------------------------------------------------------------
    async def run_trader(
        self, trader: Trader, trigger: str, *, fresh_after: float | None = None
    ) -> RunReport:
        """Check the trader's fresh symbols once and queue its new matches; never raises for the trader's
        own failures (they are in the report and the metrics)."""
        started_at, market_time = self._clock.now(), self._market.now()
        started = time.perf_counter()
        metrics = self.metrics.trader(str(trader.id))
        metrics.runs += 1
        metrics.last_trigger = trigger
        metrics.last_run_at = started_at
        symbols = trader_symbols(trader, self.settings.default_symbols)
        timeframes = trader_timeframes(trader)
        fresh, stale = self._split_fresh(symbols, timeframes)
        metrics.stale_symbols += len(stale)
        if stale:
            logger.debug("stale symbols skipped trader_id=%s symbols=%s", trader.id, ",".join(stale))

        def report(checked: int = 0, matches: tuple[str, ...] = (), errors: dict[str, str] | None = None,
                   queued: tuple[str, ...] = (), failure: str | None = None) -> RunReport:  # fmt: skip
            duration_ms = (time.perf_counter() - started) * 1000
            metrics.last_run_duration_ms = duration_ms
            if failure is not None:
                metrics.errors += 1
                metrics.last_error = failure
            return RunReport(
                trader.id, trigger, started_at, duration_ms, checked, matches, errors or {}, stale, queued,
                failure, market_time,
            )  # fmt: skip

        program = await self.prepare(trader)
        if program is None:
            return report(failure=metrics.last_error or "signal code rejected")
        if not fresh:
            return report()
        needed = [(symbol, timeframe) for symbol in fresh for timeframe in timeframes]
        fresh_after = self._clock.monotonic() if fresh_after is None else fresh_after

        async def sweep() -> SweepResult:
            return await self._checks.sweep(
                program, list(fresh), needed, fresh_after=fresh_after, deadline_ms=self.settings.deadline_ms
            )

        try:
            result = await retry(sweep, what=f"sweep trader_id={trader.id}", attempts=3, backoff=_SWEEP_RETRY)
        except SignalRuntimeError as error:
            return report(failure=f"signal code stopped: {error.reason}")
        except TransientError as error:
            return report(failure=f"sandbox unavailable: {error}")
        metrics.checks += result.checked
        metrics.matches += len(result.matches)
        metrics.errors += len(result.errors)
        if result.errors:
            first = next(iter(result.errors.items()))
            metrics.last_error = f"{first[0]}: {first[1]}"
        self.metrics.signals_checked.add(result.checked)
        self.metrics.check_cost.checks += result.checked
        queued = await self._queue_matches(trader, result.matches, metrics)
        return report(result.checked, tuple(result.matches), dict(result.errors), queued)

    def _split_fresh(
        self, symbols: tuple[str, ...], timeframes: tuple[str, ...]
    ) -> tuple[list[str], tuple[str, ...]]:
        now_ms = self._market.now().timestamp() * 1000
        limit_ms = self.settings.stale_after_secs * 1000
        fresh: list[str] = []
        stale: list[str] = []
        for symbol in dict.fromkeys(symbols):
            ok = self._tickers.get(symbol) is not None
            for timeframe in timeframes if ok else ():
                series = self._klines.get(symbol, timeframe)
                if series is None or len(series) == 0 or now_ms - series.changed_at_ms > limit_ms:
                    ok = False
                    break
            (fresh if ok else stale).append(symbol)
        return fresh, tuple(stale)

    async def _queue_matches(
        self, trader: Trader, matches: list[str], metrics: TraderMetrics
    ) -> tuple[str, ...]:
        if not matches or not self._accepting or trader.id not in self._active:
            return ()
        await self._seed_cooldown(trader.id)
        now = self._market.monotonic()
        candidates = []
        for symbol in matches:
            if (trader.id, symbol) in self._in_flight:
                metrics.already_live += 1
                continue
            last = self._last_signal.get((trader.id, symbol))
            if last is not None and now - last < self.settings.cooldown_secs:
                metrics.cooldown_skipped += 1
                continue
            candidates.append(symbol)
        if not candidates:
            return ()
        try:
            live = await self._signals.live_symbols(trader.id, candidates)
        except TransientError as error:
            logger.warning("live signals unknown, matches dropped trader_id=%s error=%s", trader.id, error)
            return ()
        metrics.already_live += len(live)
        queued = []
        for symbol in candidates:
            if symbol in live:
                continue
            ticker = self._tickers.get(symbol)
            if ticker is None or ticker.last_price <= 0:
                continue
            if not self._budget.try_spend(str(trader.id)):
                metrics.budget_skipped += 1
                continue
            match = self._match(trader, symbol, ticker)
            try:
                self._queue.put_nowait(match)
            except asyncio.QueueFull:
                logger.warning("match queue full, match dropped trader_id=%s symbol=%s", trader.id, symbol)
                continue
            self._in_flight.add((trader.id, symbol))
            queued.append(symbol)
        return tuple(queued)

    def _match(self, trader: Trader, symbol: str, ticker: Ticker) -> _Match:
        # Read the store now, before any await: the feed updates the arrays in place.
        by_timeframe = {}
        for timeframe in trader_timeframes(trader):
            series = self._klines.get(symbol, timeframe)
            if series is not None and len(series):
                by_timeframe[timeframe] = series.klines()
        market_data = build_market_data(
            symbol,
            ticker,
            by_timeframe,
            self._market.now(),
            klines_per_timeframe=self.settings.analysis_klines,
        )
        return _Match(trader, symbol, ticker.last_price, market_data)

    async def _seed_cooldown(self, trader_id: uuid.UUID) -> None:
        """Remember the trader's signals of the last cooldown window (from before a restart, too)."""
        if trader_id in self._cooldown_seeded or self.settings.cooldown_secs <= 0:
            return
        since = self._clock.now() - timedelta(seconds=self.settings.cooldown_secs)
        try:
            recent = await self._signals.recent(trader_id, since)
        except TransientError as error:
            logger.warning("cooldown history unavailable trader_id=%s error=%s", trader_id, error)
            return
        # Rows are stamped by the database's (wall) clock: their age in wall seconds is taken as market time,
        # exact live and conservative in a faster replay (the cooldown left looks longer, never shorter).
        now_wall, now = self._clock.now(), self._market.monotonic()
        for symbol, created_at in recent.items():
            age_secs = max(0.0, (now_wall - created_at).total_seconds())
            key = (trader_id, symbol)
            self._last_signal[key] = max(self._last_signal.get(key, -1e18), now - age_secs)
        self._cooldown_seeded.add(trader_id)

    # The pipeline (Component) -------------------------------------------------------------------------
    def state(self) -> ComponentState:
        return self._state

    async def run(self) -> None:
        """Run the match workers and the stranded-signal sweep until cancelled."""
        self._state = ComponentState.RUNNING
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._warm_up(), name="sandbox-warm-up")
                for number in range(self.settings.analysis_concurrency):
                    group.create_task(self._work(), name=f"signal-worker-{number}")
                group.create_task(self._sweep_stranded(), name="signal-stranded-sweep")
        finally:
            self._state = ComponentState.STOPPED

    async def _warm_up(self) -> None:
        # The sandboxes start here, after /health answers, not on the worker's start-up path.
        try:
            await self._checks.warm_up()
        except TransientError as error:
            logger.warning("sandbox processes did not start yet (the first sweep tries again): %s", error)

    async def prepare_shutdown(self) -> None:
        """Take no new matches and wait for the queued ones to be handled."""
        self._accepting = False
        await self._queue.join()

    async def drain(self) -> None:
        """Wait until every queued match has been handled (a replay moves the market on only then)."""
        await self._queue.join()

    async def _work(self) -> None:
        while True:
            match = await self._queue.get()
            try:
                await self._handle(match)
            except (ConfigError, InvariantViolation):
                raise
            except Exception:  # one match must never stop the worker
                logger.exception(
                    "signal handling failed trader_id=%s symbol=%s", match.trader.id, match.symbol
                )
            finally:
                self._in_flight.discard((match.trader.id, match.symbol))
                self._queue.task_done()

    async def _handle(self, match: _Match) -> None:
        trader, symbol = match.trader, match.symbol
        metrics = self.metrics.trader(str(trader.id))
        if trader.id not in self._active:
            return
        signal_id = uuid.uuid4()
        self._in_flight_signals.add(signal_id)
        try:
            outcome = await self._signals.insert(signal_id, trader.id, symbol, match.trigger_price)
            if outcome is InsertOutcome.ALREADY_LIVE:
                metrics.already_live += 1
                return
            self._last_signal[(trader.id, symbol)] = self._market.monotonic()
            metrics.signals_created += 1
            self.metrics.signals_triggered.add()
            logger.info(
                "signal created signal_id=%s trader_id=%s symbol=%s trigger_price=%s",
                signal_id, trader.id, symbol, match.trigger_price,
            )  # fmt: skip
            await self._analyse_and_execute(match, signal_id, metrics)
        finally:
            self._in_flight_signals.discard(signal_id)

    async def _analyse_and_execute(self, match: _Match, signal_id: uuid.UUID, metrics: TraderMetrics) -> None:
        trader, symbol = match.trader, match.symbol
        try:
            analysis = await self._analysis.analyze(trader.id, signal_id, match.market_data)
        except AnalysisFailed as error:
            metrics.analysis_failures += 1
            metrics.last_error = f"analysis failed ({error.kind}): {error}"
            logger.warning("analysis failed signal_id=%s kind=%s error=%s", signal_id, error.kind, error)
            await self._close(signal_id, f"analysis failed ({error.kind.value}): {error}")
            self._executor.record_analysis_failure(trader.id, f"{error.kind.value}: {error}")
            return
        metrics.analyses += 1
        current = self._active.get(trader.id)
        if current is None:
            await self._close(signal_id, "trader stopped before its decision was applied")
            return
        ticker = self._tickers.get(symbol)
        context = SignalContext(
            signal_id=signal_id,
            trader=current,
            symbol=symbol,
            trigger_price=match.trigger_price,
            last_price=ticker.last_price if ticker is not None else match.trigger_price,
            analysis_id=analysis.analysis_id,
        )
        logger.info(
            "signal analysed signal_id=%s decision=%s confidence=%d replayed=%s attempts=%d",
            signal_id, analysis.decision.decision, analysis.decision.confidence, analysis.replayed,
            analysis.attempts,
        )  # fmt: skip
        await self._executor.execute(context, analysis.decision)

    async def _close(self, signal_id: uuid.UUID, reason: str) -> None:
        try:
            await self._signals.close_if_new(signal_id, reason)
        except WorkerError as error:
            # The stranded sweep will close it later.
            logger.warning("could not close signal signal_id=%s error=%s", signal_id, error)

    async def _sweep_stranded(self) -> None:
        after_restart = True  # the first successful sweep closes everything left from before the start
        while True:
            if after_restart:
                cutoff, reason = (
                    self._started_at,
                    "stranded: the worker restarted before a decision was applied",
                )
            else:
                cutoff = self._clock.now() - timedelta(seconds=self.settings.stranded_after_secs)
                reason = "stranded: no decision was applied in time"
            try:
                for signal_id in await self._signals.new_before(cutoff):
                    if signal_id not in self._in_flight_signals and await self._signals.close_if_new(
                        signal_id, reason
                    ):
                        logger.warning("stranded signal closed signal_id=%s reason=%s", signal_id, reason)
                after_restart = False
            except (ConfigError, InvariantViolation):
                raise
            except WorkerError as error:
                logger.warning("stranded-signal sweep failed: %s", error)
            await self._clock.sleep(self.settings.stranded_sweep_secs)

    @property
    def queued(self) -> int:
        return self._queue.qsize()
