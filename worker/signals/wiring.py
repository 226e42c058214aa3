"""Builds the signal engine's parts from the settings: market feed, sandbox, engine, scheduler, trader sync.

`build_signal_engine` is called by the app (worker/app.py) inside its event loop; every resource it opens
(sandbox processes, HTTP clients, shared memory) is closed by the exit stack it is given. The parts are
returned as Components in the order their `prepare_shutdown` must run: the scheduler stops starting runs
before the engine drains its queued matches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from worker.clock import Clock, LiveClock
from worker.components import Component, ComponentState
from worker.execution import DecisionExecutor, LoggingExecutor, Reanalyzer
from worker.market.feed import FeedSettings, MarketFeed
from worker.market.rest import BinanceKlineSource
from worker.market.store import KlineStore
from worker.market.tickers import TickerStore
from worker.metrics import WorkerMetrics
from worker.sandbox import PostgrestTraderErrorReporter, SandboxConfig, SandboxPool, SignalRunner
from worker.scheduler.scheduler import SchedulerSettings, SignalScheduler
from worker.settings import WorkerSettings
from worker.signals.analysis import AnalysisBudget, AnalysisClient, AnalysisSettings
from worker.signals.engine import EngineSettings, SignalEngine
from worker.signals.signal_store import SignalStore
from worker.signals.snapshots import SnapshotSource
from worker.trader_sync import TraderSync, TraderSyncSettings

logger = logging.getLogger(__name__)

# How long a part may take to connect before /health calls it degraded rather than starting.
START_GRACE_SECS: Final = 60.0
_METRICS_PERIOD_SECS: Final = 1.0


class MarketFeedComponent:
    """Runs the market feed and reports its connection and freshness to the metrics."""

    name = "market-feed"

    def __init__(
        self, feed: MarketFeed, source: BinanceKlineSource, metrics: WorkerMetrics, clock: Clock
    ) -> None:
        self.feed = feed
        self._source = source
        self._metrics = metrics
        self._clock = clock
        self._started = clock.monotonic()

    def state(self) -> ComponentState:
        health = self.feed.health()
        if health.streams == 0 or (health.connected and not health.stale):
            return ComponentState.RUNNING
        if health.last_message_at is None and self._clock.monotonic() - self._started < START_GRACE_SECS:
            return ComponentState.STARTING
        return ComponentState.DEGRADED

    def websocket_status(self) -> str:
        health = self.feed.health()
        if health.streams == 0:
            return "idle"
        if health.connected:
            return "stale" if health.stale else "connected"
        return "connecting" if health.last_message_at is None else "disconnected"

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.feed.run(), name="market-feed")
                group.create_task(self._report(), name="market-feed-metrics")
        finally:
            await self._source.close()

    async def prepare_shutdown(self) -> None:
        return None

    async def _report(self) -> None:
        while True:
            self._metrics.websocket_status = self.websocket_status()
            newest_ms = max((series.changed_at_ms for series in self.feed.store), default=0)
            if newest_ms:
                self._metrics.last_kline_update = datetime.fromtimestamp(newest_ms / 1000, UTC)
            await self._clock.sleep(_METRICS_PERIOD_SECS)


class TraderSyncComponent:
    """Runs the trader sync (Realtime + reconcile) that drives the scheduler."""

    name = "trader-sync"

    def __init__(self, sync: TraderSync, clock: Clock) -> None:
        self.sync = sync
        self._clock = clock
        self._started = clock.monotonic()

    def state(self) -> ComponentState:
        if self.sync.live:
            return ComponentState.RUNNING
        if self.sync.reconciles == 0 or self._clock.monotonic() - self._started < START_GRACE_SECS:
            return ComponentState.STARTING
        return ComponentState.DEGRADED

    async def run(self) -> None:
        await self.sync.run()

    async def prepare_shutdown(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class SignalEngineParts:
    feed: MarketFeed
    engine: SignalEngine
    scheduler: SignalScheduler
    trader_sync: TraderSync
    pool: SandboxPool
    components: list[Component]


async def build_signal_engine(
    settings: WorkerSettings,
    metrics: WorkerMetrics,
    stack: contextlib.AsyncExitStack,
    *,
    executor: DecisionExecutor | None = None,
    reanalyzer: Reanalyzer | None = None,
    extra_tickers: Callable[[], set[str]] | None = None,
    clock: Clock | None = None,
) -> SignalEngineParts:
    """Start the sandbox pool and build every part (their `run` is started by the app)."""
    clock = clock or LiveClock()
    anon_key = settings.supabase_anon_key.get_secret_value()
    token = settings.machine_token.get_secret_value()
    store = KlineStore(capacity=settings.kline_history)
    tickers = TickerStore()
    source = BinanceKlineSource(str(settings.binance_base_url))
    stack.push_async_callback(source.close)
    feed = MarketFeed(FeedSettings(ws_base_url=settings.stream_url), store, tickers, source, clock=clock)
    sandbox_config = SandboxConfig(
        processes=settings.sandbox_processes,
        memory_limit_mb=settings.sandbox_memory_limit_mb,
        default_deadline_ms=settings.sandbox_deadline_ms,
    )
    pool = await stack.enter_async_context(SandboxPool(sandbox_config))
    reporter = PostgrestTraderErrorReporter(settings.rest_url, anon_key, token)
    stack.push_async_callback(reporter.aclose)
    runner = SignalRunner(pool, reporter)
    signal_store = SignalStore(settings.rest_url, anon_key, token, settings.user_id, clock=clock)
    stack.push_async_callback(signal_store.aclose)
    analysis = AnalysisClient(
        AnalysisSettings(
            functions_url=settings.functions_url,
            anon_key=anon_key,
            machine_token=token,
            attempt_timeout_secs=settings.analysis_attempt_timeout_secs,
            deadline_secs=settings.analysis_deadline_secs,
            max_attempts=settings.analysis_max_attempts,
            calls_per_hour=settings.analysis_calls_per_hour,
        ),
        clock=clock,
    )
    stack.push_async_callback(analysis.aclose)
    # The snapshot covers everything the scheduled traders follow (the feed's current subscriptions).
    snapshots = SnapshotSource(store, tickers, lambda: feed_keys(feed), monotonic=clock.monotonic)
    stack.callback(snapshots.close)
    engine = SignalEngine(
        runner,
        snapshots,
        klines=store,
        tickers=tickers,
        signals=signal_store,
        analysis=analysis,
        budget=AnalysisBudget(settings.analysis_calls_per_hour, clock.monotonic),
        executor=executor or LoggingExecutor(),
        settings=EngineSettings(
            default_symbols=settings.default_symbols,
            cooldown_secs=settings.signal_cooldown_secs,
            stale_after_secs=settings.signal_stale_after_secs,
            analysis_concurrency=settings.analysis_concurrency,
            stranded_after_secs=settings.signal_stranded_after_secs,
        ),
        metrics=metrics,
        clock=clock,
    )
    scheduler = SignalScheduler(
        engine,
        feed,
        SchedulerSettings(
            default_symbols=settings.default_symbols,
            close_gather_secs=settings.candle_close_gather_secs,
            close_fallback_secs=settings.candle_close_fallback_secs,
        ),
        reanalyzer=reanalyzer,
        extra_tickers=extra_tickers,
        clock=clock,
    )
    scheduler.start()
    sync = TraderSync(
        TraderSyncSettings(
            realtime_url=settings.realtime_url,
            rest_url=settings.rest_url,
            anon_key=anon_key,
            machine_jwt=token,
            user_id=settings.user_id,
        ),
        scheduler,
        clock=clock,
    )
    components: list[Component] = [
        TraderSyncComponent(sync, clock),
        MarketFeedComponent(feed, source, metrics, clock),
        scheduler,
        engine,
    ]
    logger.info(
        "signal engine ready sandbox_processes=%d default_symbols=%d stream_url=%s",
        settings.sandbox_processes, len(settings.default_symbols), settings.stream_url,
    )  # fmt: skip
    return SignalEngineParts(feed, engine, scheduler, sync, pool, components)


def feed_keys(feed: MarketFeed) -> list[tuple[str, str]]:
    """The (symbol, interval) series the feed currently follows."""
    return [(series.symbol, series.interval) for series in feed.store]
