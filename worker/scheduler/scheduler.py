"""The scheduler: one timer job per active trader for its signal checks, one for its re-analysis.

Driven by the trader sync (`TraderScheduler`: add / update / pause / resume / remove), it keeps the market
feed subscribed to exactly what the active traders need. Timers run on the market clock (timers.py), so a
replay at any speed runs a trader as live trading would. Fixed intervals (`1s` .. `1d`) fire on the UTC
grid. A `<tf>_close` trader runs as soon as the feed has delivered the closing kline of that timeframe
for all its symbols (or `close_gather_secs` after the first one, whichever is first); its timer fires
`close_fallback_secs` of market time after every close as a fallback that first backfills any symbol
whose closing candle never arrived over REST, and runs only if a newer candle closed than the last one
the trader ran on. A job runs one instance at a time and missed runs coalesce, so a slow run is never
stacked: a close arriving during a run makes the job run once more right after it. Pausing or removing a
trader removes its jobs at once; a run already under way finishes but creates no further signals.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol

from worker.clock import Clock, LiveClock
from worker.components import ComponentState
from worker.domain.intervals import CLOSE_FALLBACK_SECS, INTERVAL_MS, TimerInterval, parse_interval
from worker.domain.trader import Trader
from worker.domain.universe import subscriptions, trader_symbols
from worker.errors import ConfigError
from worker.market.feed import MarketFeed
from worker.metrics import WorkerMetrics
from worker.scheduler.grid import GridTrigger
from worker.scheduler.timers import TimerClock, Timers

logger = logging.getLogger(__name__)

_RECENT_RUNS: Final = 256
# Timer runs that start within this long of each other share one data snapshot.
_TIMER_SHARE_SECS: Final = 0.25


# How often the extra ticker symbols (open positions' symbols) are compared with what the feed follows.
EXTRA_TICKERS_CHECK_SECS = 2.0


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    default_symbols: tuple[str, ...]
    close_gather_secs: float = 0.5
    close_fallback_secs: float = CLOSE_FALLBACK_SECS
    fallback_backfill_wait_secs: float = 3.0
    max_misfire_grace_secs: float = 60.0


class RunRecord(Protocol):
    """What the scheduler keeps of each run (the signal engine's RunReport)."""

    @property
    def trader_id(self) -> uuid.UUID: ...

    @property
    def trigger(self) -> str: ...

    @property
    def started_at(self) -> datetime: ...

    @property
    def duration_ms(self) -> float: ...


class TraderRunner(Protocol):
    """What runs a scheduled trader's checks (the signal engine)."""

    async def prepare(self, trader: Trader) -> object | None:
        """Get the trader ready to run (compile its code); None when it cannot run."""
        ...

    def activate(self, trader: Trader) -> None: ...

    def deactivate(self, trader_id: uuid.UUID, *, forget: bool = False) -> None: ...

    def is_active(self, trader_id: uuid.UUID) -> bool: ...

    async def run_trader(
        self, trader: Trader, trigger: str, *, fresh_after: float | None = None
    ) -> RunRecord:
        """One run of the trader's checks."""
        ...


class Reanalyzer(Protocol):
    async def reanalyze(self, trader: Trader) -> None:
        """Send the trader's watching signals and open positions for analysis and apply the decisions."""
        ...


@dataclass(eq=False)
class _Gather:
    open_time_ms: int
    closed: set[str] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _Scheduled:
    """One active trader's jobs and run state."""

    trader: Trader
    interval: TimerInterval
    symbols: frozenset[str]
    running: bool = False
    rerun: bool = False
    next_trigger: str | None = None  # set by a candle-close event for the run it requests
    next_fresh_after: float | None = None
    last_close_open_ms: int | None = None  # the newest closed candle a close run has covered
    gather: _Gather | None = None


def _signal_job_id(trader_id: uuid.UUID) -> str:
    return f"signal:{trader_id}"


def _reanalysis_job_id(trader_id: uuid.UUID) -> str:
    return f"reanalysis:{trader_id}"


class SignalScheduler:
    """Implements the trader sync's TraderScheduler over market-time timers; a Component."""

    name = "scheduler"

    def __init__(
        self,
        engine: TraderRunner,
        feed: MarketFeed,
        settings: SchedulerSettings,
        *,
        reanalyzer: Reanalyzer,
        extra_tickers: Callable[[], set[str]],
        metrics: WorkerMetrics | None = None,
        clock: Clock | None = None,
        market: TimerClock | None = None,
    ) -> None:
        self._engine = engine
        self._metrics = metrics or WorkerMetrics()
        # Each run's duration against its interval, and runs that started late (for scale-machines).
        self._sweeps = self._metrics.sweeps
        # Symbols followed beyond the traders' own (open positions the monitor must keep guarding).
        self._extra_tickers = extra_tickers
        self._followed_extra: set[str] = set()
        self._feed = feed
        self._settings = settings
        self._reanalyzer = reanalyzer
        self._clock = clock or LiveClock()
        self._market: TimerClock = market or LiveClock()
        self._timers = Timers(self._market)
        self._started = False
        self._scheduled: dict[uuid.UUID, _Scheduled] = {}
        self._by_close_timeframe: dict[str, set[uuid.UUID]] = {}
        self._running_jobs = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._state = ComponentState.STARTING
        self.recent_runs: deque[RunRecord] = deque(maxlen=_RECENT_RUNS)

    # Lifecycle (Component) ----------------------------------------------------------------------------
    def start(self) -> None:
        """Listen for closing klines (before any add); the timers run from `run()` on."""
        if self._started:
            return
        self._started = True
        self._feed.add_kline_closed_listener(self._on_kline_closed)
        self._state = ComponentState.RUNNING

    def state(self) -> ComponentState:
        return self._state

    async def run(self) -> None:
        """Run the jobs until cancelled (the runs under way are cancelled with them)."""
        self.start()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._timers.run(), name="scheduler-timers")
                while True:
                    await self._clock.sleep(EXTRA_TICKERS_CHECK_SECS)
                    self.follow_extra_tickers()
        finally:
            self._stop()

    async def prepare_shutdown(self) -> None:
        """Start no new runs and wait for those under way."""
        self._timers.pause()
        for scheduled in self._scheduled.values():
            self._cancel_gather(scheduled)
        await self._idle.wait()
        self._state = ComponentState.STOPPED

    def _stop(self) -> None:
        self._feed.remove_kline_closed_listener(self._on_kline_closed)
        for scheduled in self._scheduled.values():
            self._cancel_gather(scheduled)
        self._state = ComponentState.STOPPED

    # TraderScheduler ---------------------------------------------------------------------------------
    async def add(self, trader: Trader) -> None:
        if trader.is_active:
            await self._schedule(trader)

    async def update(self, trader: Trader) -> None:
        self._unschedule(trader.id)
        if trader.is_active:
            await self._schedule(trader)
        else:
            self._engine.deactivate(trader.id)
            self._resubscribe()

    async def pause(self, trader: Trader) -> None:
        self._unschedule(trader.id)
        self._engine.deactivate(trader.id)
        self._resubscribe()
        logger.info("trader paused trader_id=%s status=%s", trader.id, trader.status)

    async def resume(self, trader: Trader) -> None:
        await self._schedule(trader)

    async def remove(self, trader: Trader) -> None:
        self._unschedule(trader.id)
        self._engine.deactivate(trader.id, forget=True)
        self._resubscribe()

    # Introspection (HTTP API, tests) ----------------------------------------------------------------------
    def scheduled_traders(self) -> list[uuid.UUID]:
        return list(self._scheduled)

    def scheduled(self) -> list[Trader]:
        """The traders whose jobs run, as scheduled."""
        return [scheduled.trader for scheduled in self._scheduled.values()]

    def next_run_time(self, trader_id: uuid.UUID) -> datetime | None:
        """When the trader's check timer fires next (market time)."""
        return self._timers.next_run_time(_signal_job_id(trader_id))

    def job_ids(self) -> set[str]:
        return self._timers.job_ids()

    def run_now(self, trader_id: uuid.UUID) -> bool:
        """Run the trader's check job now, as its timer would (a `<tf>_close` trader: the close fallback);
        False when the trader is not scheduled."""
        scheduled = self._scheduled.get(trader_id)
        if scheduled is None:
            return False
        self._run_now(scheduled)
        return True

    # Jobs ------------------------------------------------------------------------------------------
    async def _schedule(self, trader: Trader) -> None:
        try:
            interval = parse_interval(trader.check_interval)
            reanalysis = parse_interval(trader.reanalysis_interval)
        except ConfigError as error:
            logger.error("trader not scheduled trader_id=%s: %s", trader.id, error)
            return
        self._unschedule(trader.id)
        if await self._engine.prepare(trader) is None:
            return  # rejected code: reported; the sync pauses the trader once its status is 'error'
        symbols = frozenset(trader_symbols(trader, self._settings.default_symbols))
        offset = self._settings.close_fallback_secs if interval.on_close else 0.0
        reanalysis_offset = self._settings.close_fallback_secs if reanalysis.on_close else 0.0
        reanalysis_trigger = GridTrigger(reanalysis.period_secs, reanalysis_offset)
        trader_id = trader.id
        self._timers.add(
            _signal_job_id(trader_id), GridTrigger(interval.period_secs, offset),
            lambda: self._signal_job(trader_id), grace_secs=self._grace_secs(interval),
        )  # fmt: skip
        self._timers.add(
            _reanalysis_job_id(trader_id), reanalysis_trigger, lambda: self._reanalysis_job(trader_id),
            grace_secs=self._grace_secs(reanalysis),
        )  # fmt: skip
        # No await from here on, so a job that fires finds the trader registered.
        scheduled = self._scheduled[trader.id] = _Scheduled(trader, interval, symbols)
        self._engine.activate(trader)
        if interval.timeframe is not None:
            self._by_close_timeframe.setdefault(interval.timeframe, set()).add(trader.id)
        self._resubscribe()
        logger.info(
            "trader scheduled trader_id=%s check_interval=%s reanalysis_interval=%s symbols=%d",
            trader.id, interval.text, reanalysis.text, len(scheduled.symbols),
        )  # fmt: skip

    def _grace_secs(self, interval: TimerInterval) -> float:
        # A run later than half its period is dropped: the next one is closer than catching up would be.
        return float(max(1, min(interval.period_secs // 2, self._settings.max_misfire_grace_secs)))

    def _unschedule(self, trader_id: uuid.UUID) -> None:
        scheduled = self._scheduled.pop(trader_id, None)
        if scheduled is not None:
            self._cancel_gather(scheduled)
            if scheduled.interval.timeframe is not None:
                self._by_close_timeframe.get(scheduled.interval.timeframe, set()).discard(trader_id)
        for job_id in (_signal_job_id(trader_id), _reanalysis_job_id(trader_id)):
            self._timers.remove(job_id)

    def _resubscribe(self) -> None:
        klines, tickers = subscriptions(
            (s.trader for s in self._scheduled.values()), self._settings.default_symbols
        )
        self._followed_extra = self._extra_tickers()
        self._feed.set_subscriptions(klines, tickers | self._followed_extra)

    def follow_extra_tickers(self) -> None:
        """Re-read the extra symbols (e.g. after a position opened or closed); cheap when nothing changed."""
        if self._extra_tickers() != self._followed_extra:
            self._resubscribe()

    async def _signal_job(self, trader_id: uuid.UUID) -> None:
        scheduled = self._scheduled.get(trader_id)
        if scheduled is None or not self._engine.is_active(trader_id):
            return
        scheduled.running = True
        self._running_jobs += 1
        self._idle.clear()
        try:
            trigger, fresh_after = scheduled.next_trigger, scheduled.next_fresh_after
            scheduled.next_trigger = scheduled.next_fresh_after = None
            if trigger is None and scheduled.interval.on_close:
                if not await self._fallback_due(scheduled):
                    return
                trigger = "close_fallback"
            elif trigger is None:
                trigger = "timer"
                fresh_after = self._clock.monotonic() - _TIMER_SHARE_SECS
            started_market_secs = self._market.monotonic()
            report = await self._engine.run_trader(scheduled.trader, trigger, fresh_after=fresh_after)
            self.recent_runs.append(report)
            # The interval is market time, so the run is measured on the market's clock too: on a replay at
            # 10x a run of 1 s takes 10 s of a 60 s interval, as many as 1 s of 6 s on the wall.
            self._sweeps.record(
                self._market.monotonic() - started_market_secs, scheduled.interval.period_secs
            )
        except Exception:  # a job must never die silently
            logger.exception("signal run failed trader_id=%s", trader_id)
        finally:
            scheduled.running = False
            self._running_jobs -= 1
            if self._running_jobs == 0:
                self._idle.set()
            if scheduled.rerun and self._scheduled.get(trader_id) is scheduled:
                scheduled.rerun = False
                self._run_now(scheduled)

    async def _reanalysis_job(self, trader_id: uuid.UUID) -> None:
        scheduled = self._scheduled.get(trader_id)
        if scheduled is None or not self._engine.is_active(trader_id):
            return
        try:
            await self._reanalyzer.reanalyze(scheduled.trader)
        except Exception:
            logger.exception("re-analysis failed trader_id=%s", trader_id)
        finally:
            metrics = self._metrics.trader(str(trader_id))
            metrics.reanalyses += 1
            metrics.last_reanalysis_at = self._market.now()

    def _run_now(self, scheduled: _Scheduled) -> None:
        if scheduled.running:
            if not scheduled.rerun:
                # A run asked for while the last one still runs starts late: the machine is behind.
                self._sweeps.missed += 1
            scheduled.rerun = True
            return
        self._timers.run_now(_signal_job_id(scheduled.trader.id))

    # Candle closes ---------------------------------------------------------------------------------
    def _on_kline_closed(self, symbol: str, interval: str, open_time_ms: int) -> None:
        """From the feed's reader: cheap bookkeeping, then at most one timer call."""
        for trader_id in self._by_close_timeframe.get(interval, ()):
            scheduled = self._scheduled.get(trader_id)
            if scheduled is None or symbol not in scheduled.symbols:
                continue
            if scheduled.last_close_open_ms is not None and open_time_ms <= scheduled.last_close_open_ms:
                continue  # already run for this candle (a repeated or late closing update)
            gather = scheduled.gather
            if gather is None or open_time_ms > gather.open_time_ms:
                self._cancel_gather(scheduled)
                gather = scheduled.gather = _Gather(open_time_ms)
            elif open_time_ms < gather.open_time_ms:
                continue
            gather.closed.add(symbol)
            if gather.closed >= scheduled.symbols:
                self._fire_close(trader_id, open_time_ms)
            elif gather.timer is None:
                loop = asyncio.get_running_loop()
                gather.timer = loop.call_later(
                    self._settings.close_gather_secs, self._fire_close, trader_id, open_time_ms
                )

    def _fire_close(self, trader_id: uuid.UUID, open_time_ms: int) -> None:
        scheduled = self._scheduled.get(trader_id)
        if scheduled is None or scheduled.gather is None or scheduled.gather.open_time_ms != open_time_ms:
            return
        self._cancel_gather(scheduled)
        scheduled.last_close_open_ms = open_time_ms
        scheduled.next_trigger = "candle_close"
        scheduled.next_fresh_after = self._clock.monotonic()
        self._run_now(scheduled)

    @staticmethod
    def _cancel_gather(scheduled: _Scheduled) -> None:
        if scheduled.gather is not None and scheduled.gather.timer is not None:
            scheduled.gather.timer.cancel()
        scheduled.gather = None

    async def _fallback_due(self, scheduled: _Scheduled) -> bool:
        """After a close on the market clock: backfill symbols whose closing candle is missing; True when a
        newer candle closed than the last close run covered."""
        timeframe = scheduled.interval.timeframe
        assert timeframe is not None
        expected = self._expected_closed_open_ms(timeframe)
        lagging = [s for s in scheduled.symbols if (self._last_closed_open_ms(s, timeframe) or -1) < expected]
        if lagging:
            for symbol in lagging:
                self._feed.request_backfill((symbol, timeframe))
            waited = 0.0
            while waited < self._settings.fallback_backfill_wait_secs and any(
                (self._last_closed_open_ms(s, timeframe) or -1) < expected for s in lagging
            ):
                await self._clock.sleep(0.1)
                waited += 0.1
        closed = [self._last_closed_open_ms(s, timeframe) for s in scheduled.symbols]
        newest = max((value for value in closed if value is not None), default=None)
        if newest is None or (
            scheduled.last_close_open_ms is not None and newest <= scheduled.last_close_open_ms
        ):
            return False
        scheduled.last_close_open_ms = newest
        logger.info(
            "close fallback runs trader_id=%s timeframe=%s open_time_ms=%d backfilled=%d",
            scheduled.trader.id, timeframe, newest, len(lagging),
        )  # fmt: skip
        return True

    def _expected_closed_open_ms(self, timeframe: str) -> int:
        """The open time of the candle that should have closed last: by the market clock, or by the market's
        newest candle of any series when the feed is live (a lagging feed runs behind)."""
        step = INTERVAL_MS[timeframe]
        now_ms = int(self._market.now().timestamp() * 1000)
        expected = now_ms // step * step - step
        health = self._feed.health()
        if health.connected and not health.stale:
            market_ms = max((s.last_open_time or 0 for s in self._feed.store), default=0)
            if market_ms:
                expected = min(expected, market_ms // step * step - step)
        return expected

    def _last_closed_open_ms(self, symbol: str, timeframe: str) -> int | None:
        series = self._feed.store.get(symbol, timeframe)
        if series is None or len(series) == 0:
            return None
        if series.last_closed:
            return series.last_open_time
        times = series.klines().open_time
        return int(times[-2]) if len(times) >= 2 else None
