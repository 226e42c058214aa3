"""The signal engine as the app builds it (`worker.app.build_worker`), for tests: an exchange simulator in
this loop, the market feed, the sandbox pool, the local stack's PostgREST and analyze-signal (Gemini
stand-in behind it); the decisions go to a recorder instead of trading."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from psycopg.rows import dict_row

from devstack import keys
from devstack.exchange.data import default_data_dir
from devstack.exchange.server import ExchangeSimulator, SimulatorConfig
from devstack.stack import DevStack
from tests.factories import AppUser
from worker.app import Substitutes, build_worker, worker_config
from worker.domain.decision import Decision
from worker.domain.signal import SignalContext
from worker.domain.trader import Trader
from worker.market.feed import MarketFeed
from worker.market.recordings import SymbolData, load_directory
from worker.market.store import KlineStore
from worker.market.tickers import TickerStore
from worker.metrics import WorkerMetrics
from worker.sandbox import SandboxConfig, SandboxPool
from worker.scheduler.scheduler import SchedulerSettings, SignalScheduler
from worker.settings import load_settings
from worker.signals.analysis import AnalysisSettings
from worker.signals.engine import EngineSettings, SignalEngine

# 2025-01-03 03:00 UTC: two days into the 1m recordings, so a backfill finds 1000 candles.
START_MS = 1_735_873_200_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")
NEVER = "def check_signal(symbol, ticker, klines):\n    return False\n"
ALWAYS = "def check_signal(symbol, ticker, klines):\n    return ticker['lastPrice'] > 0\n"


async def until(predicate: Callable[[], object], timeout_secs: float = 20.0) -> None:
    """Poll `predicate` every 50 ms until it is true (TimeoutError after `timeout_secs`)."""
    async with asyncio.timeout(timeout_secs):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.05)


@dataclass
class RecordingExecutor:
    """A DecisionExecutor that keeps what it was handed (the trading component is tested on its own)."""

    executed: list[tuple[SignalContext, Decision]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    analysis_failures: list[tuple[uuid.UUID, str]] = field(default_factory=list)

    async def execute(self, context: SignalContext, decision: Decision) -> None:
        self.executed.append((context, decision))
        self.arrived.set()

    def record_analysis_failure(self, trader_id: uuid.UUID, reason: str = "") -> None:
        self.analysis_failures.append((trader_id, reason))


def insert_trader(
    db: psycopg.Connection[Any],
    user: AppUser,
    code: str,
    *,
    check_interval: str = "1m_close",
    timeframes: tuple[str, ...] = ("1m",),
    symbols: tuple[str, ...] | None = SYMBOLS,
    reanalysis_interval: str = "1h",
    name: str = "engine test trader",
) -> Trader:
    """A trader row as the platform would write it, read back as the worker parses it."""
    with db.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(
            "insert into public.traders (user_id, name, signal_code, ai_instructions, timeframes,"
            " check_interval, reanalysis_interval, symbols) values (%s, %s, %s, 'Trade carefully.', %s, %s,"
            " %s, %s) returning *",
            (user.id, name, code, list(timeframes), check_interval, reanalysis_interval,
             list(symbols) if symbols is not None else None),
        ).fetchone()  # fmt: skip
    assert row is not None
    return Trader.from_row(row)


def trader_row(db: psycopg.Connection[Any], trader_id: uuid.UUID) -> dict[str, Any]:
    with db.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute("select * from public.traders where id = %s", (trader_id,)).fetchone()
    assert row is not None
    return row


def signal_rows(db: psycopg.Connection[Any], trader_id: uuid.UUID) -> list[dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(
            "select id, symbol, status::text, trigger_price, close_reason, created_at from public.signals"
            " where trader_id = %s order by created_at",
            (trader_id,),
        ).fetchall()


@dataclass
class Engine:
    simulator: ExchangeSimulator
    feed: MarketFeed
    store: KlineStore
    tickers: TickerStore
    pool: SandboxPool
    engine: SignalEngine
    scheduler: SignalScheduler
    metrics: WorkerMetrics
    executor: RecordingExecutor

    async def wait_for_data(self, symbols: tuple[str, ...], timeframe: str, timeout_secs: float = 20) -> None:
        """Until every symbol has a backfilled series and a ticker."""
        async with asyncio.timeout(timeout_secs):
            while True:
                series = [self.store.get(symbol, timeframe) for symbol in symbols]
                if all(s is not None and len(s) >= 100 for s in series) and all(
                    self.tickers.get(symbol) is not None for symbol in symbols
                ):
                    return
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_engine(
    stack: DevStack,
    user: AppUser,
    machine_id: str,
    *,
    recorded: dict[str, SymbolData] | None = None,
    speed: float = 60.0,
    paused: bool = False,
    engine_settings: EngineSettings | None = None,
    scheduler_settings: SchedulerSettings | None = None,
    analysis_settings: AnalysisSettings | None = None,
    sandbox: SandboxConfig | None = None,
) -> AsyncIterator[Engine]:
    """The worker built as the app builds it, with the engine's parts running (feed and market clock,
    engine workers, scheduler) until the block ends; the trader sync is not run (tests schedule traders
    themselves)."""
    data = recorded if recorded is not None else load_directory(default_data_dir())
    simulator = ExchangeSimulator(SimulatorConfig(start_ms=START_MS, speed=speed, paused=paused), data)
    await simulator.start()
    settings = load_settings(
        {
            "USER_ID": str(user.id),
            "MACHINE_ID": machine_id,
            "SUPABASE_URL": stack.config.api_url,
            "SUPABASE_ANON_KEY": keys.ANON_KEY,
            "MACHINE_TOKEN": user.machine_jwt(machine_id),
            "MACHINE_API_SECRET": "engine-tests-api-secret-0123456789",
            "BINANCE_BASE_URL": simulator.url,
            "DEFAULT_SYMBOLS": ",".join(SYMBOLS),
        }
    )
    config = worker_config(settings)
    config = replace(
        config,
        engine=engine_settings or config.engine,
        scheduler=scheduler_settings or config.scheduler,
        analysis=analysis_settings or config.analysis,
        sandbox=sandbox or config.sandbox,
    )
    executor = RecordingExecutor()
    async with contextlib.AsyncExitStack() as resources:
        resources.push_async_callback(simulator.stop)
        worker = await build_worker(
            settings, resources, config=config, substitutes=Substitutes(decisions=executor)
        )
        feed, engine, scheduler = worker.market.feed, worker.signals.engine, worker.scheduler
        tasks = []
        for name, coroutine in (
            ("feed", feed.run()),
            ("market-clock", worker.market.sync.run()),
            ("engine", engine.run()),
            ("scheduler", scheduler.run()),
        ):
            tasks.append(asyncio.create_task(coroutine, name=f"test-{name}"))
        try:
            yield Engine(
                simulator, feed, worker.market.klines, worker.market.tickers, worker.signals.pool, engine,
                scheduler, worker.metrics, executor,
            )  # fmt: skip
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
