"""The signal engine's run path under load: kline store -> freshness check -> shared snapshot -> sandbox.

What a candle close does on a busy machine: every trader's job starts at once, each checks its symbols'
freshness in the stores, they share one snapshot of the stores in shared memory, and every program runs
over its symbols in the sandbox pool. Traders are not activated for signals, so the figures are the
checking path alone (matches would go on to PostgREST and analyze-signal, which bench_functions measures).
Every round writes different real candles into the stores, so nothing is reused from an earlier round.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from bench.bench_sandbox import SOURCES, helper_strategy, load, market
from bench.measurement import Measurement
from worker.clock import LiveClock
from worker.db.client import Database, MachineAuth
from worker.db.signals import SignalRows
from worker.domain.enums import TraderStatus
from worker.domain.trader import Trader, TraderRisk
from worker.market.klines import Klines
from worker.market.messages import Ticker
from worker.market.store import KlineStore
from worker.market.tickers import TickerStore
from worker.metrics import WorkerMetrics, resident_memory_mb
from worker.sandbox import SandboxConfig, SandboxPool, SignalRunner
from worker.signals.analysis import AnalysisBudget, AnalysisClient, AnalysisSettings
from worker.signals.checks import SnapshotChecks
from worker.signals.engine import EngineSettings, SignalEngine
from worker.signals.snapshots import SnapshotSource

ROUNDS = 5
UNUSED_URL = "http://127.0.0.1:9"  # the checking path never calls PostgREST or the functions


def fill(
    store: KlineStore, tickers: TickerStore, data: dict[str, dict[str, Klines]], round_index: int
) -> None:
    """Write the round's candles into the store (as the feed would) and a ticker per symbol."""
    for symbol, by_timeframe in data.items():
        for timeframe, klines in by_timeframe.items():
            store.drop(symbol, timeframe)
            series = store.series(symbol, timeframe)
            for row in zip(
                klines.open_time.tolist(), klines.open.tolist(), klines.high.tolist(), klines.low.tolist(),
                klines.close.tolist(), klines.volume.tolist(), strict=True,
            ):  # fmt: skip
                series.upsert(*row, closed=True)
        last = Decimal(repr(float(by_timeframe["1h"].close[-1])))
        tickers.update(
            Ticker(symbol, last, last, last, last, Decimal(0), Decimal(0), last, last, Decimal(1000),
                   Decimal(1000) * last, round_index + 1)
        )  # fmt: skip


def trader(index: int, symbols: tuple[str, ...]) -> Trader:
    return Trader(
        id=uuid.uuid4(), user_id=uuid.uuid4(), name=f"bench {index}", signal_code=helper_strategy(index),
        signal_code_version=1, ai_instructions="-", timeframes=tuple(SOURCES), check_interval="1h_close",
        reanalysis_interval="1h", symbols=symbols,
        risk=TraderRisk(Decimal(100), 3, Decimal(50)), status=TraderStatus.ACTIVE, error_message=None,
        updated_at=datetime.now(UTC),
    )  # fmt: skip


async def engine_sweep(engine: SignalEngine, traders: list[Trader]) -> float:
    started = time.perf_counter()
    fresh_after = time.monotonic()
    reports = await asyncio.gather(*(engine.run_trader(t, "bench", fresh_after=fresh_after) for t in traders))
    elapsed_ms = (time.perf_counter() - started) * 1000
    failed = [r for r in reports if r.failure or r.errors or r.stale]
    if failed:
        raise AssertionError(f"a benchmark run failed: {failed[0]}")
    return elapsed_ms


async def scenario(
    pool: SandboxPool, recordings: dict[str, Klines], traders_count: int, symbols: int, rounds: int
) -> tuple[float, float, float]:
    """(median engine sweep ms, median snapshot build ms, this process's RSS MB) for one load."""
    store, tickers = KlineStore(), TickerStore()
    snapshots = SnapshotSource(store, tickers, store.keys)
    unused_auth = MachineAuth("-", "-")  # never sent: no trader is active, so nothing is signalled
    database = Database(f"{UNUSED_URL}/rest/v1", unused_auth, clock=LiveClock())
    signals = SignalRows(database)
    analysis = AnalysisClient(AnalysisSettings(functions_url=UNUSED_URL), unused_auth)
    engine = SignalEngine(
        SnapshotChecks(SignalRunner(pool), snapshots), klines=store, tickers=tickers, signals=signals,
        analysis=analysis,
        budget=AnalysisBudget(60), executor=None,  # type: ignore[arg-type]  # never reached: no trader is active
        settings=EngineSettings(default_symbols=()), metrics=WorkerMetrics(),
    )  # fmt: skip
    try:
        fill(store, tickers, market(symbols, 97, recordings), 0)
        names = tuple(sorted({series.symbol for series in store}))
        traders = [trader(i, names) for i in range(traders_count)]
        await engine_sweep(engine, traders)  # compile and warm the processes
        sweeps, builds = [], []
        for round_index in range(rounds):
            fill(store, tickers, market(symbols, round_index, recordings), round_index + 1)
            sweeps.append(await engine_sweep(engine, traders))
            started = time.perf_counter()
            async with snapshots.lease(time.monotonic(), []):
                builds.append((time.perf_counter() - started) * 1000)
        return statistics.median(sweeps), statistics.median(builds), resident_memory_mb()
    finally:
        snapshots.close()
        await database.aclose()
        await analysis.aclose()


async def measure() -> list[Measurement]:
    recordings = {timeframe: load(*source) for timeframe, source in SOURCES.items()}
    results: list[Measurement] = []
    async with SandboxPool(SandboxConfig(processes=2)) as pool:
        sweep_ms, build_ms, worker_mb = await scenario(pool, recordings, 20, 100, ROUNDS)
        pool_mb = pool.stats().rss_mb
        results += [
            Measurement(
                "engine sweep 20 traders x 100 symbols x 3 tf", sweep_ms, "ms",
                f"median of {ROUNDS}; stores -> freshness -> shared snapshot -> sandbox; target < 200 ms",
            ),
            Measurement("snapshot of the stores (100 x 3 x 1000)", build_ms, "ms", f"median of {ROUNDS}"),
            Measurement("worker process RSS (stores + engine)", worker_mb, "MB", "after 20 x 100"),
            Measurement("sandbox pool RSS (2 processes)", pool_mb, "MB", "after 20 x 100"),
            Measurement("worker + sandbox RSS", worker_mb + pool_mb, "MB", "target: fits a 256 MB machine"),
        ]  # fmt: skip
        big_ms, big_build_ms, _ = await scenario(pool, recordings, 100, 200, 3)
        results += [
            Measurement("engine sweep 100 traders x 200 symbols x 3 tf", big_ms, "ms", "median of 3"),
            Measurement("snapshot of the stores (200 x 3 x 1000)", big_build_ms, "ms", "median of 3"),
        ]
    return results


def run() -> list[Measurement]:
    return asyncio.run(measure())
