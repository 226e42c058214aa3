"""Trading: executor decisions per second (paper, local stack), monitor CPU at 10 ticker updates/s per
symbol, and ticker update to close order sent (p50/p99) with 1,000 open positions across 100 symbols.

One user with 100 traders, each holding 10 positions on 10 different symbols, all in paper mode through
the real PostgREST and transition RPCs. The close latency runs from `on_price` to the venue receiving the
order, which includes recording the order in Postgres first (the order is never sent unrecorded).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal

from bench.measurement import Measurement
from devstack.keys import ANON_KEY, mint_jwt
from devstack.stack import DevStack
from worker.app import Trading, build_trading
from worker.clock import LiveClock
from worker.db import Tables
from worker.db.client import Database, MachineAuth
from worker.domain.decision import Decision
from worker.domain.enums import AnalysisDecision, OrderSide
from worker.domain.orders import ClientOrderId, OrderReport
from worker.domain.positions import TrailingMode
from worker.domain.signal import SignalContext
from worker.domain.trader import Trader
from worker.market.messages import Ticker
from worker.market.store import KlineStore
from worker.market.tickers import TickerStore
from worker.signals.analysis import AnalysisClient, AnalysisSettings
from worker.trading.config import TradingConfig
from worker.trading.monitor import PositionMonitor
from worker.trading.venue import PaperVenue

NEEDS_STACK = True  # python -m bench starts the local stack for it

REST_URL = "http://127.0.0.1:54321/rest/v1"
FUNCTIONS_URL = "http://127.0.0.1:54321/functions/v1"
TRADERS = 100
SYMBOLS = 100
PER_TRADER = 10
CONCURRENCY = 32
UPDATES_PER_SEC_PER_SYMBOL = 10
CPU_SECS = 10.0
PRICE = Decimal(100)
CLOSE_TIMEOUT_SECS = 30.0


class TimedVenue(PaperVenue):
    """The paper venue, noting when each order reaches it."""

    def __init__(self, config: TradingConfig, paper_balance: Callable[[], Awaitable[Decimal]]) -> None:
        super().__init__(config.paper_fee_rate, config.paper_slippage_rate, paper_balance)
        self.sent_at: dict[str, float] = {}
        self._changed = asyncio.Condition()

    async def market_order(
        self, client_order_id: ClientOrderId, symbol: str, side: OrderSide, quantity: Decimal,
        reference_price: Decimal,
    ) -> OrderReport:  # fmt: skip
        self.sent_at[client_order_id] = time.perf_counter()
        async with self._changed:
            self._changed.notify_all()
        return await super().market_order(client_order_id, symbol, side, quantity, reference_price)

    async def wait_for(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.sent_at) >= count)


def _ticker(symbol: str, price: Decimal) -> Ticker:
    zero = Decimal(0)
    return Ticker(symbol, price, price, price, price, zero, zero, price, price, zero, zero, 1)


def _machine_id(user_id: uuid.UUID) -> str:
    return f"bench-trading-{user_id.hex[:12]}"


def _setup(stack: DevStack) -> tuple[uuid.UUID, list[Trader], list[tuple[uuid.UUID, Trader, str]]]:
    user_id = uuid.uuid4()
    traders: list[Trader] = []
    signals: list[tuple[uuid.UUID, Trader, str]] = []
    with stack.postgres.connect(autocommit=True) as db:
        db.execute(
            "insert into auth.users (id, aud, role, email) values (%s, 'authenticated', 'authenticated', %s)",
            (user_id, f"bench-{user_id.hex[:12]}@example.com"),
        )
        db.execute("update public.users set paper_starting_balance_usd = 10000000 where id = %s", (user_id,))
        db.execute(  # the database honours a machine token only while its machine is live
            "insert into public.fly_machines (user_id, machine_id, status) values (%s, %s, 'running')",
            (user_id, _machine_id(user_id)),
        )
        for number in range(TRADERS):
            cursor = db.execute(
                "insert into public.traders (user_id, name, signal_code, ai_instructions, timeframes,"
                " check_interval, reanalysis_interval, risk) values (%s, %s, 'def check_signal(s, t, k):\n"
                "    return False\n', 'bench', array['1m'], '1m_close', '5m', jsonb_build_object("
                "'max_position_size_usd', 100, 'max_open_positions', %s, 'daily_loss_limit_usd', 1000000))"
                " returning *",
                (user_id, f"bench {number}", PER_TRADER),
            )
            names = [d.name for d in cursor.description or []]
            found = cursor.fetchone()
            assert found is not None
            trader = Trader.from_row(dict(zip(names, found, strict=True)))
            traders.append(trader)
            for k in range(PER_TRADER):
                symbol = f"S{(number + k * 10) % SYMBOLS:03d}USDT"
                signal_id = uuid.uuid4()
                db.execute(
                    "insert into public.signals (id, trader_id, user_id, symbol, trigger_price)"
                    " values (%s, %s, %s, %s, %s)",
                    (signal_id, trader.id, user_id, symbol, PRICE),
                )
                signals.append((signal_id, trader, symbol))
    return user_id, traders, signals


def _cleanup(stack: DevStack, user_id: uuid.UUID) -> None:
    with stack.postgres.connect(autocommit=True) as db:
        db.execute("delete from auth.users where id = %s", (user_id,))


async def _decisions_per_sec(trading: Trading, signals: list[tuple[uuid.UUID, Trader, str]]) -> Measurement:
    """Open 1,000 positions with 32 decisions in flight."""
    entry = Decision(AnalysisDecision.OPEN_LONG, "bench", 80, stop_loss=Decimal(90), take_profit=Decimal(130))
    queue = list(signals)
    started = time.perf_counter()

    async def opener() -> None:
        while queue:
            signal_id, trader, symbol = queue.pop()
            await trading.executor.execute(
                SignalContext(signal_id, trader, symbol, PRICE, PRICE, uuid.uuid4()), entry
            )

    await asyncio.gather(*(opener() for _ in range(CONCURRENCY)))
    opened = len(trading.positions)
    detail = f"{opened} positions, {CONCURRENCY} in flight, local PostgREST"
    return Measurement(
        "open_long decisions/s (paper)", opened / (time.perf_counter() - started), "1/s", detail
    )


async def _monitor_cpu(monitor: PositionMonitor, symbols: list[str]) -> list[Measurement]:
    """10 updates/s per symbol, prices wandering inside every stop, target and trailing stop."""
    rng = random.Random(7)
    total = int(CPU_SECS * UPDATES_PER_SEC_PER_SYMBOL * len(symbols))
    interval = 1.0 / (UPDATES_PER_SEC_PER_SYMBOL * len(symbols))
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    evaluate: list[float] = []
    for n in range(total):
        price = Decimal(100) + Decimal(rng.randint(-200, 200)) / 100
        t0 = time.perf_counter()
        monitor.on_price(symbols[n % len(symbols)], price)
        evaluate.append(time.perf_counter() - t0)
        delay = wall_before + (n + 1) * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    cpu, wall = time.process_time() - cpu_before, time.perf_counter() - wall_before
    assert monitor.closes_started == 0, "the CPU run must not trigger exits"
    detail = f"{len(symbols)} symbols, {monitor.watched()} positions, trailing on, {wall:.1f}s"
    return [
        Measurement("monitor CPU at 10 updates/s/symbol", 100 * cpu / wall, "% of a core", detail),
        Measurement(
            "on_price evaluation p50", statistics.median(evaluate) * 1e6, "us", "10 positions/symbol"
        ),
    ]


async def _close_latency(trading: Trading, venue: TimedVenue, symbols: list[str]) -> list[Measurement]:
    """One symbol's stop-loss hit at a time; from on_price to each of its close orders reaching the venue."""
    latencies: list[float] = []
    for symbol in symbols:
        before = set(venue.sent_at)
        expected = sum(1 for p in trading.positions.all() if p.symbol == symbol)
        t0 = time.perf_counter()
        trading.monitor.on_price(symbol, Decimal(89))
        async with asyncio.timeout(CLOSE_TIMEOUT_SECS):  # a close that failed is retried only on a next price
            await venue.wait_for(len(before) + expected)
        latencies += [venue.sent_at[cid] - t0 for cid in set(venue.sent_at) - before]
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    detail = f"{len(ordered)} closes, 10 per update, each order recorded in Postgres first"
    return [
        Measurement("ticker -> close order sent p50", statistics.median(ordered) * 1000, "ms", detail),
        Measurement("ticker -> close order sent p99", p99 * 1000, "ms", "same run"),
    ]


async def _measure(user_id: uuid.UUID, signals: list[tuple[uuid.UUID, Trader, str]]) -> list[Measurement]:
    config = TradingConfig(
        paper_slippage_rate=Decimal(0), trailing_mode=TrailingMode.PERCENT, trailing_distance=Decimal("0.05"),
        symbol_cooldown_secs=0,
    )  # fmt: skip
    token = mint_jwt("trader_machine", user_id, extra_claims={"machine_id": _machine_id(user_id)})
    clock = LiveClock()
    auth = MachineAuth(ANON_KEY, token)
    database = Database(REST_URL, auth, clock=clock)
    tables = Tables.on(database, user_id)
    venue = TimedVenue(config, tables.trading.paper_balance)
    symbols = [f"S{i:03d}USDT" for i in range(SYMBOLS)]
    tickers = TickerStore()
    for symbol in symbols:
        tickers.update(_ticker(symbol, PRICE))
    unused = AnalysisClient(AnalysisSettings(functions_url=FUNCTIONS_URL), auth)  # no re-analysis here
    trading = build_trading(
        config, tables, venue, tickers=tickers, klines=KlineStore(), analyzer=unused, clock=clock
    )
    try:
        results = [await _decisions_per_sec(trading, signals)]
        guard = asyncio.create_task(trading.guard.run())
        results += await _monitor_cpu(trading.monitor, symbols)
        results += await _close_latency(trading, venue, symbols)
        guard.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await guard
    finally:
        await unused.aclose()
        await database.aclose()
    return results


def run() -> list[Measurement]:
    stack = DevStack()
    user_id, _traders, signals = _setup(stack)
    try:
        return asyncio.run(_measure(user_id, signals))
    finally:
        _cleanup(stack, user_id)
