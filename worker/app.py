"""The composition root: the settings in, every part built in order with its dependencies as constructor
arguments, all of them run under one TaskGroup, and an ordered, graceful shutdown.

    async with contextlib.AsyncExitStack() as resources:     # closes every client, process and venue
        worker = await build_worker(settings, resources)     # refuses a database it was not built for
        await worker.app.run()

This is the only module besides `__main__` that reads WorkerSettings: `worker_config` cuts them into each
component's own settings, and the stage functions (`build_market`, `build_trading`, `build_signals`) build
the parts from those. Tests build the same graph through the same functions, with `Substitutes` where a
real part cannot serve the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from dataclasses import dataclass
from typing import Any

from worker.clock import Clock, LiveClock, MarketClock, MarketTime
from worker.components import Component, ComponentState, ShutdownReport
from worker.db import Tables, TradingTables
from worker.db.client import Database, MachineAuth
from worker.db.machine import MachineRows, check_schema_version
from worker.db.machine_token import TokenRenewer
from worker.db.sizing import SizingRequests
from worker.domain.enums import MachineStatus, SignalStatus
from worker.domain.positions import TrailingMode
from worker.errors import ConfigError
from worker.heartbeat import Heartbeat
from worker.http_api import HttpApi, build_api
from worker.log_shipping import LogQueue, LogShipper, LogShippingHandler, LogShippingSettings
from worker.market.component import MarketFeedComponent
from worker.market.feed import FeedSettings, MarketFeed
from worker.market.market_time import MarketClockSync
from worker.market.reachability import Reachability, ReachabilityReporter
from worker.market.rest import BinanceKlineSource
from worker.market.store import KlineStore
from worker.market.tickers import TickerStore
from worker.metrics import WorkerMetrics, process_age_secs
from worker.retry import retry
from worker.sandbox import SandboxConfig, SandboxPool, SignalRunner
from worker.scheduler.scheduler import SchedulerSettings, SignalScheduler
from worker.scheduler.sizing_gate import SizingGate, SizingGateSettings
from worker.scheduler.trader_sync import TraderSync, TraderSyncSettings
from worker.settings import WorkerSettings
from worker.signals.analysis import AnalysisBudget, AnalysisClient, AnalysisSettings
from worker.signals.checks import SnapshotChecks
from worker.signals.engine import DecisionExecutor, EngineSettings, SignalEngine
from worker.signals.snapshots import SnapshotSource
from worker.trading.config import TradingConfig
from worker.trading.executor import TradeExecutor
from worker.trading.guard import PositionGuard
from worker.trading.guardrails import Guardrails
from worker.trading.monitor import PositionMonitor
from worker.trading.orders import OrderFlow
from worker.trading.positions import OpenPositions
from worker.trading.prices import MarketPrices
from worker.trading.protection import Protector
from worker.trading.reanalysis import Analyzer, TradingReanalyzer
from worker.trading.recovery import Recovery
from worker.trading.venue import PaperVenue, Venue

logger = logging.getLogger(__name__)

# How long POST /reload-traders waits for the trader sync's reconcile before counting what the database holds.
RELOAD_TIMEOUT_SECS = 30.0


# Settings, cut per component ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AppSettings:
    version: str
    machine_id: str
    http_host: str
    http_port: int
    heartbeat_interval_secs: float
    shutdown_timeout_secs: float


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Every component's slice of the worker's settings (secrets stay in WorkerSettings)."""

    app: AppSettings
    rest_url: str
    binance_base_url: str
    binance_health_repeat_secs: float
    market_clock_sync_secs: float
    kline_history: int
    feed: FeedSettings
    sandbox: SandboxConfig
    analysis: AnalysisSettings
    engine: EngineSettings
    scheduler: SchedulerSettings
    sizing_gate: SizingGateSettings
    sync: TraderSyncSettings
    trading: TradingConfig
    logs: LogShippingSettings


def worker_config(settings: WorkerSettings) -> WorkerConfig:
    mode = settings.trading_trailing_mode
    return WorkerConfig(
        app=AppSettings(
            version=settings.version,
            machine_id=settings.machine_id,
            http_host=settings.http_host,
            http_port=settings.http_port,
            heartbeat_interval_secs=settings.heartbeat_interval_secs,
            shutdown_timeout_secs=settings.shutdown_timeout_secs,
        ),
        rest_url=settings.rest_url,
        binance_base_url=str(settings.binance_base_url),
        binance_health_repeat_secs=settings.binance_health_repeat_secs,
        market_clock_sync_secs=settings.market_clock_sync_secs,
        kline_history=settings.kline_history,
        feed=FeedSettings(ws_base_url=settings.stream_url),
        sandbox=SandboxConfig(
            processes=settings.sandbox_processes,
            memory_limit_mb=settings.sandbox_memory_limit_mb,
            default_deadline_ms=settings.sandbox_deadline_ms,
        ),
        analysis=AnalysisSettings(
            functions_url=settings.functions_url,
            attempt_timeout_secs=settings.analysis_attempt_timeout_secs,
            deadline_secs=settings.analysis_deadline_secs,
            max_attempts=settings.analysis_max_attempts,
            calls_per_hour=settings.analysis_calls_per_hour,
        ),
        engine=EngineSettings(
            default_symbols=settings.default_symbols,
            cooldown_secs=settings.signal_cooldown_secs,
            stale_after_secs=settings.signal_stale_after_secs,
            analysis_concurrency=settings.analysis_concurrency,
            stranded_after_secs=settings.signal_stranded_after_secs,
        ),
        scheduler=SchedulerSettings(
            default_symbols=settings.default_symbols,
            close_gather_secs=settings.candle_close_gather_secs,
            close_fallback_secs=settings.candle_close_fallback_secs,
        ),
        sizing_gate=SizingGateSettings(default_symbols=settings.default_symbols),
        sync=TraderSyncSettings(realtime_url=settings.realtime_url, user_id=settings.user_id),
        logs=LogShippingSettings(
            interval_secs=settings.log_ship_interval_secs,
            batch_lines=settings.log_ship_batch_lines,
            queue_lines=settings.log_ship_queue_lines,
        ),
        trading=TradingConfig(
            paper_fee_rate=settings.trading_paper_fee_rate,
            paper_slippage_rate=settings.trading_paper_slippage_rate,
            default_balance_fraction=settings.trading_default_balance_fraction,
            symbol_cooldown_secs=settings.trading_symbol_cooldown_secs,
            safe_mode_failures=settings.trading_safe_mode_failures,
            monitor_sweep_interval_secs=settings.trading_monitor_sweep_interval_secs,
            stale_price_secs=settings.trading_stale_price_secs,
            trailing_mode=TrailingMode(mode) if mode != "off" else None,
            trailing_distance=settings.trading_trailing_distance,
            trailing_activation_fraction=settings.trading_trailing_activation_fraction,
            atr_interval=settings.trading_atr_interval,
            exchange_stop_update_secs=settings.trading_exchange_stop_update_secs,
            order_timeout_secs=settings.trading_order_timeout_secs,
        ),
    )


@dataclass(frozen=True, slots=True)
class Substitutes:
    """Parts a test puts in place of the real ones; everything else is built as in production."""

    decisions: DecisionExecutor | None = None  # who receives the signal engine's decisions (else trading)


# The parts ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Market:
    klines: KlineStore
    tickers: TickerStore
    reachability: Reachability  # every request to Binance (streams, klines, the real venue) reports here
    source: BinanceKlineSource
    feed: MarketFeed
    clock: MarketClock  # the market's time, kept on the exchange's by `sync`
    sync: MarketClockSync


@dataclass(frozen=True, slots=True)
class Trading:
    venue: Venue
    prices: MarketPrices
    guardrails: Guardrails
    monitor: PositionMonitor
    positions: OpenPositions
    flow: OrderFlow
    protector: Protector
    executor: TradeExecutor
    reanalyzer: TradingReanalyzer
    recovery: Recovery
    guard: PositionGuard


@dataclass(frozen=True, slots=True)
class Signals:
    pool: SandboxPool
    runner: SignalRunner
    snapshots: SnapshotSource
    engine: SignalEngine


@dataclass(frozen=True, slots=True)
class Worker:
    venue_reason: str  # why the venue is paper or real
    tables: Tables
    metrics: WorkerMetrics
    market: Market
    trading: Trading
    signals: Signals
    scheduler: SignalScheduler
    sync: TraderSync
    app: WorkerApp


def build_market(config: WorkerConfig, resources: contextlib.AsyncExitStack, *, clock: Clock) -> Market:
    klines = KlineStore(capacity=config.kline_history)
    tickers = TickerStore()
    reachability = Reachability()
    source = BinanceKlineSource(config.binance_base_url, reachability=reachability)
    resources.push_async_callback(source.close)
    market_clock = MarketClock(clock)
    feed = MarketFeed(
        config.feed, klines, tickers, source, clock=clock, market=market_clock, reachability=reachability
    )
    sync = MarketClockSync(market_clock, source, clock=clock, interval_secs=config.market_clock_sync_secs)
    return Market(klines, tickers, reachability, source, feed, market_clock, sync)


def choose_venue(
    settings: WorkerSettings,
    real_trading_enabled: bool,
    config: TradingConfig,
    tables: TradingTables,
    *,
    reachability: Reachability | None = None,
) -> tuple[Venue, str]:
    """Real trading only when the user enabled it, keys are present and PAPER_TRADING_ONLY is false."""
    reason = None
    if settings.paper_trading_only:
        reason = "PAPER_TRADING_ONLY is set"
    elif settings.binance_api_key is None or settings.binance_api_secret is None:
        reason = "no Binance API keys are configured"
    elif not real_trading_enabled:
        reason = "the user has not enabled real trading"
    if reason is not None:
        paper = PaperVenue(config.paper_fee_rate, config.paper_slippage_rate, tables.trading.paper_balance)
        return paper, reason
    assert settings.binance_api_key is not None and settings.binance_api_secret is not None
    # Imported here: python-binance costs ~14 MB resident, and a paper worker (most of them) never needs it.
    from worker.trading.binance_venue import BinanceVenue  # noqa: PLC0415

    venue = BinanceVenue(
        str(settings.binance_base_url),
        settings.binance_api_key.get_secret_value(),
        settings.binance_api_secret.get_secret_value(),
        request_timeout_secs=config.order_timeout_secs,
        stop_limit_buffer=config.stop_limit_buffer,
        reachability=reachability,
    )
    return venue, "real trading is enabled"


def build_trading(
    config: TradingConfig,
    tables: TradingTables,
    venue: Venue,
    *,
    tickers: TickerStore,
    klines: KlineStore,
    analyzer: Analyzer,
    clock: MarketTime,
    wall: Clock | None = None,
) -> Trading:
    """The trading parts around a started venue; positions are guarded from the first ticker on.

    `clock` is market time (cooldowns, the daily loss window, stale prices); `wall` paces the guard's
    sweeps (default: `clock`).
    """
    prices = MarketPrices(
        tickers, klines, atr_interval=config.atr_interval, atr_period=config.atr_period, clock=clock
    )
    guardrails = Guardrails(config)
    monitor = PositionMonitor(config, clock=clock, atr=prices.atr, tickers=tickers)
    positions = OpenPositions(monitor)
    flow = OrderFlow(tables.trading, venue, positions, guardrails, clock=clock)
    protector = Protector(
        flow, venue, positions, trading=tables.trading, signals=tables.signals, prices=prices
    )
    executor = TradeExecutor(
        flow, protector, positions, guardrails, signals=tables.signals, trading=tables.trading,
        prices=prices, config=config, clock=clock,
    )  # fmt: skip
    return Trading(
        venue=venue,
        prices=prices,
        guardrails=guardrails,
        monitor=monitor,
        positions=positions,
        flow=flow,
        protector=protector,
        executor=executor,
        reanalyzer=TradingReanalyzer(
            executor,
            analyzer,
            prices.market_data,
            positions=positions,
            signals=tables.signals,
            guardrails=guardrails,
        ),
        recovery=Recovery(
            tables.trading,
            tables.signals,
            venue,
            positions=positions,
            flow=flow,
            protector=protector,
            guardrails=guardrails,
            config=config,
            clock=clock,
        ),
        guard=PositionGuard(monitor, protector, config, clock=wall or clock),
    )


async def build_signals(
    config: WorkerConfig,
    tables: Tables,
    market: Market,
    resources: contextlib.AsyncExitStack,
    *,
    analysis: AnalysisClient,
    decisions: DecisionExecutor,
    metrics: WorkerMetrics,
    clock: Clock,
) -> Signals:
    """The sandbox pool and the signal engine that hands its decisions to `decisions`. The pool's processes
    start when the engine runs (or at the first sweep), so they are not on the way to /health."""
    pool = SandboxPool(config.sandbox)
    resources.push_async_callback(pool.aclose)
    runner = SignalRunner(pool, tables.traders)
    # The snapshot covers everything the scheduled traders follow (the feed's current subscriptions).
    snapshots = SnapshotSource(market.klines, market.tickers, market.klines.keys, monotonic=clock.monotonic)
    resources.callback(snapshots.close)
    engine = SignalEngine(
        SnapshotChecks(runner, snapshots),
        klines=market.klines,
        tickers=market.tickers,
        signals=tables.signals,
        analysis=analysis,
        budget=AnalysisBudget(config.analysis.calls_per_hour, market.clock.monotonic),
        executor=decisions,
        settings=config.engine,
        metrics=metrics,
        clock=clock,
        market=market.clock,
    )
    return Signals(pool, runner, snapshots, engine)


async def check_database(machine: MachineRows, version: str, *, clock: Clock) -> None:
    """Refuse a schema this worker was not built for, and a token whose machine has no row."""
    check_schema_version(await retry(machine.schema_version, what="schema_version()", clock=clock))

    async def first_heartbeat() -> None:
        await machine.record_heartbeat(MachineStatus.STARTING, version)

    await retry(first_heartbeat, what="first heartbeat", clock=clock)


def start_log_shipping(
    settings: WorkerSettings,
    config: LogShippingSettings,
    tables: Tables,
    resources: contextlib.AsyncExitStack,
    *,
    clock: Clock,
) -> LogShipper:
    """From here on every log record (masked like the stream's) waits to be shipped to machine_logs."""
    queue = LogQueue(config.queue_lines)
    handler = LogShippingHandler(queue, settings.secrets(), settings.log_ship_level)
    root = logging.getLogger()
    root.addHandler(handler)
    resources.callback(root.removeHandler, handler)
    return LogShipper(queue, tables.logs, config, clock=clock)


def token_renewer(settings: WorkerSettings, auth: MachineAuth, *, clock: Clock) -> TokenRenewer | None:
    """What renews `auth`'s machine token; None (with a warning) when the machine has no credential."""
    if settings.machine_credential is None:
        logger.warning("MACHINE_CREDENTIAL is not set: the machine token will not be renewed")
        return None
    return TokenRenewer(
        auth,
        functions_url=settings.functions_url,
        machine_id=settings.machine_id,
        credential=settings.machine_credential.get_secret_value(),
        clock=clock,
    )


async def build_worker(
    settings: WorkerSettings,
    resources: contextlib.AsyncExitStack,
    *,
    config: WorkerConfig | None = None,
    clock: Clock | None = None,
    substitutes: Substitutes | None = None,
) -> Worker:
    """Check the database, then build every part in dependency order (none of them running yet)."""
    config = config or worker_config(settings)
    clock = clock or LiveClock()
    substitutes = substitutes or Substitutes()
    auth = MachineAuth(
        settings.supabase_anon_key.get_secret_value(), settings.machine_token.get_secret_value()
    )
    renewer = token_renewer(settings, auth, clock=clock)
    if renewer is not None and renewer.renew_due_secs() == 0:
        # A restarted machine's token from its env may have expired: renew before the database sees it.
        await retry(renewer.renew, what="machine token renewal", clock=clock)
    database = Database(config.rest_url, auth, clock=clock)
    resources.push_async_callback(database.aclose)
    tables = Tables.on(database, settings.user_id)
    shipper = start_log_shipping(settings, config.logs, tables, resources, clock=clock)
    await check_database(tables.machine, config.app.version, clock=clock)
    metrics = WorkerMetrics(memory_limit_mb=settings.fly_vm_memory_mb)
    market = build_market(config, resources, clock=clock)
    if not await market.sync.sync_once():  # recovery seeds the guardrails in market time
        logger.warning("market time unknown at start: the wall clock stands in until the exchange answers")
    analysis = AnalysisClient(config.analysis, auth, clock=clock)
    resources.push_async_callback(analysis.aclose)
    real_trading = await tables.machine.real_trading_enabled()
    venue, reason = choose_venue(
        settings, real_trading, config.trading, tables, reachability=market.reachability
    )
    logger.info("trading mode=%s reason=%s", venue.mode, reason)
    await retry(venue.start, what=f"{venue.mode} venue start", clock=clock)
    resources.push_async_callback(venue.aclose)
    trading = build_trading(
        config.trading, tables, venue, tickers=market.tickers, klines=market.klines, analyzer=analysis,
        clock=market.clock, wall=clock,
    )  # fmt: skip
    decisions = substitutes.decisions or trading.executor
    signals = await build_signals(
        config,
        tables,
        market,
        resources,
        analysis=analysis,
        decisions=decisions,
        metrics=metrics,
        clock=clock,
    )
    scheduler = SignalScheduler(
        signals.engine,
        market.feed,
        config.scheduler,
        reanalyzer=trading.reanalyzer,
        extra_tickers=trading.monitor.symbols,  # open positions stay subscribed
        metrics=metrics,  # re-analyses per trader; sweep load for scale-machines
        clock=clock,
        market=market.clock,
    )
    scheduler.start()
    sizing = SizingRequests(settings.functions_url, auth)
    resources.push_async_callback(sizing.aclose)
    gate = SizingGate(
        scheduler,
        sizing.ask,
        config.sizing_gate,
        metrics=metrics,
        check_cost_secs=lambda: metrics.check_cost.secs(signals.pool.pids),
        market_rate=lambda: market.clock.rate,
        clock=clock,
    )
    sync = TraderSync(config.sync, tables.traders, auth, gate, clock=clock)
    components: list[Component] = [
        *([renewer] if renewer is not None else []),
        trading.guard,
        gate,
        sync,
        MarketFeedComponent(market.feed, market.source, metrics, clock=clock, sync=market.sync),
        ReachabilityReporter(
            market.reachability,
            functools.partial(tables.machine.report_service_health, "binance"),
            repeat_failure_secs=config.binance_health_repeat_secs,
            clock=clock,
        ),
        scheduler,  # stops starting runs before the engine drains its queued matches
        signals.engine,
        shipper,  # last: its final flush carries the other components' shutdown lines
    ]
    logger.info(
        "worker ready sandbox_processes=%d default_symbols=%d stream_url=%s",
        config.sandbox.processes, len(config.engine.default_symbols), config.feed.ws_base_url,
    )  # fmt: skip
    app = WorkerApp(
        config.app,
        settings.machine_api_secret.get_secret_value(),
        tables=tables,
        trading=trading,
        sync=sync,
        heartbeat=Heartbeat(
            tables.machine, config.app.version, config.app.heartbeat_interval_secs, clock=clock
        ),
        components=components,
        metrics=metrics,
        clock=clock,
        market=market,
    )
    return Worker(reason, tables, metrics, market, trading, signals, scheduler, sync, app)


async def run(settings: WorkerSettings) -> None:
    """`python -m worker`: build the worker and run it until it is told to stop."""
    async with contextlib.AsyncExitStack() as resources:
        worker = await build_worker(settings, resources)
        await worker.app.run()


# Running --------------------------------------------------------------------------------------------
class _StopRequested(Exception):
    """Raised inside the TaskGroup to cancel every component once shutdown is under way."""


class WorkerApp:
    """One user's worker running: recovery, the components, the HTTP API, heartbeat, graceful shutdown."""

    def __init__(
        self,
        settings: AppSettings,
        api_secret: str,
        *,
        tables: Tables,
        trading: Trading,
        sync: TraderSync,
        heartbeat: Heartbeat,
        components: list[Component],
        metrics: WorkerMetrics,
        clock: Clock,
        market: Market,
    ) -> None:
        self._settings = settings
        self._market = market
        self.version = settings.version
        self.machine_id = settings.machine_id
        self.metrics = metrics
        self._api_secret = api_secret
        self._tables = tables
        self._trading = trading
        self._sync = sync
        self._heartbeat = heartbeat
        self._components = components
        self._clock = clock
        self._started_monotonic = clock.monotonic()
        self._stop = asyncio.Event()
        self._prepared: ShutdownReport | None = None
        self._prepare_lock = asyncio.Lock()
        self.shutdown_reason: str | None = None

    async def run(self) -> None:
        """Recover trading state, run everything until a shutdown is requested, then stop."""
        # Positions are guarded from the first ticker on: recovery arms the monitor before the feed runs.
        await self._trading.recovery.run()
        await self._count_state()
        api = await self._start_http()
        # Until the last line is logged: a SIGTERM while the worker stops (Fly sends one to a machine that a
        # POST /shutdown is already stopping) must not kill it before its final heartbeat.
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_shutdown, signal.Signals(signum).name)
        try:
            await self._run_components()
        finally:
            await api.close()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    async def _run_components(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._heartbeat.run(), name="heartbeat")
                for component in self._components:
                    group.create_task(component.run(), name=component.name)
                group.create_task(self._stop_when_requested(), name="shutdown")
        except* _StopRequested:
            pass
        except* ConfigError as errors:
            # A component found the configuration unusable (e.g. a refused token): stop as misconfigured.
            raise errors.exceptions[0] from None
        await self._heartbeat.beat(MachineStatus.STOPPED)
        logger.info("worker stopped reason=%s", self.shutdown_reason)

    async def _stop_when_requested(self) -> None:
        await self._stop.wait()
        try:
            async with asyncio.timeout(self._settings.shutdown_timeout_secs):
                await self.prepare_shutdown()
        except TimeoutError:
            logger.error(
                "prepare_shutdown did not finish within %.0fs; stopping anyway",
                self._settings.shutdown_timeout_secs,
            )
        raise _StopRequested

    async def _start_http(self) -> HttpApi:
        api = build_api(self, self._api_secret)
        host, port = self._settings.http_host, self._settings.http_port
        await api.start(host, port)
        # From here /health answers 200: the worker is up (its components report `starting` until connected).
        self.metrics.startup_secs = process_age_secs()
        self.metrics.startup_cpu_secs = time.process_time()
        startup = "-" if self.metrics.startup_secs is None else f"{self.metrics.startup_secs:.3f}"
        logger.info(
            "http api listening host=%s port=%d startup_secs=%s startup_cpu_secs=%.3f",
            host, port, startup, self.metrics.startup_cpu_secs,
        )  # fmt: skip
        return api

    async def _count_state(self) -> int:
        """What the database holds for this user, into the metrics; returns the number of active traders."""
        counts = await asyncio.gather(
            self._tables.traders.count_active(),
            self._tables.trading.count_open_positions(),
            self._tables.signals.count(SignalStatus.WATCHING),
        )
        self.metrics.active_traders, self.metrics.open_positions, self.metrics.watching_signals = counts
        logger.info("state loaded active_traders=%d open_positions=%d watching_signals=%d", *counts)
        return counts[0]

    # WorkerControl (used by the HTTP API) -------------------------------------------------------------------
    def uptime_secs(self) -> float:
        return self._clock.monotonic() - self._started_monotonic

    def component_states(self) -> dict[str, ComponentState]:
        states = {self._heartbeat.name: self._heartbeat.state()}
        states.update({component.name: component.state() for component in self._components})
        return states

    def market_state(self) -> dict[str, Any]:
        """The market as this worker holds it: its market time, each ticker and each candle series."""
        market = self._market
        tickers = {
            symbol: {"lastPrice": str(ticker.last_price), "eventTimeMs": ticker.event_time_ms}
            for symbol, ticker in sorted(market.tickers.all().items())
        }
        series = {}
        for symbol, interval in sorted(market.klines.keys()):
            found = market.klines.klines(symbol, interval)
            if found is not None and len(found):
                series[f"{symbol}@{interval}"] = {
                    "candles": len(found),
                    "lastOpenTimeMs": int(found.open_time[-1]),
                    "lastClose": float(found.close[-1]),
                    "lastVolume": float(found.volume[-1]),
                }
        return {"marketTimeMs": int(market.clock.now_ms()), "tickers": tickers, "klines": series}

    def open_positions(self) -> list[dict[str, Any]]:
        trading = self._trading
        return trading.positions.view(trading.prices.last_price, trading.monitor.trailing_state)

    async def reload_traders(self) -> int:
        """Re-read what the database holds for this user; returns the number of active traders."""
        if not self._prepare_lock.locked():  # not while shutting down
            try:
                async with asyncio.timeout(RELOAD_TIMEOUT_SECS):
                    await self._sync.reload_traders()
            except TimeoutError:
                logger.warning("trader sync did not reconcile within %.0fs", RELOAD_TIMEOUT_SECS)
        return await self._count_state()

    async def prepare_shutdown(self) -> ShutdownReport:
        """Pause new work, let in-flight work finish, persist; idempotent (a second call reports again)."""
        async with self._prepare_lock:
            if self._prepared is None:
                for component in self._components:
                    with contextlib.suppress(Exception):
                        await component.prepare_shutdown()
                await self._heartbeat.prepare_shutdown()
            with contextlib.suppress(Exception):
                await self.reload_traders()
            self._prepared = ShutdownReport(
                open_positions=self.metrics.open_positions,
                watching_signals=self.metrics.watching_signals,
                components={name: state.value for name, state in self.component_states().items()},
            )
            return self._prepared

    def request_shutdown(self, reason: str) -> None:
        if not self._stop.is_set():
            logger.info("shutdown requested reason=%s", reason)
            self.shutdown_reason = reason
            self._stop.set()
