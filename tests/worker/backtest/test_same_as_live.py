"""A backtest equals a live run over the same window, trade for trade, with the Gemini stand-in deciding.

The live run is a real worker (`python -m worker` with its machine token) trading paper against the exchange
simulator, which replays the same recordings from the window's start, and analyze-signal (live form) in
front of the stand-in. The backtest runs the same trader over the same window in this process, its
signals judged by analyze-signal's backtest form as the same user.

A market replayed at a speed moves on while a worker thinks, which no backtest does: at 60x a second of
analysis is a minute of prices. So the test is the live run's market: the simulator is paused, and the test
moves it to the moments where a live worker at 1x would act and waits until the worker has acted:
- every close of the trader's timeframe (its checks; the backtest visits only those where check_signal did
  more than say no, which is the same), every re-analysis moment (5 s after a close for `<tf>_close`), and,
  while a position is open, the first millisecond its stop or target is reached on the candle path (the
  test finds it from the position's levels as the database holds them, leg by leg as the backtest does);
- what the worker learns at a moment comes in the order a live worker at 1x learns it: first the market as
  it stood the instant before (every stream flowing), then the ticker of the moment with the candle streams
  held (so a position's stop or target is judged, and a re-analysis due then runs, on the moment's price
  and the candles of the instant before, as the backtest does), then the candles (so a check at a close
  reads its closed candle and the moment's ticker).
The worker is waited on through what it reports (/metrics/market: the ticker and candles it holds;
/metrics/traders: its runs, matches and re-analyses) and the database (no signal left `new`, no order
pending, the position closed at a crossing). Then every trade is compared field by field: symbol, side, the
market moment it opened and closed, entry and exit prices, size, close reason, fees.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest

from devstack import keys
from devstack.exchange.data import default_data_dir
from devstack.stack import DevStack
from tests.factories import AppUser, create_user, delete_user
from tests.worker.test_service import free_port, wait_healthy, worker_env
from worker.backtest.analysts import ModelAnalyst
from worker.backtest.market import BacktestMarket
from worker.backtest.report import BacktestReport
from worker.backtest.run import BacktestSpec, run_backtest
from worker.db.client import MachineAuth
from worker.domain.intervals import INTERVAL_MS
from worker.domain.trader import Trader
from worker.market.recordings import VOLUME_SCALE, SymbolData, load_directory
from worker.market.store import KlineStore
from worker.market.tickers import TickerStore
from worker.sandbox import SandboxConfig, SandboxPool
from worker.signals.analysis import AnalysisClient, AnalysisSettings

SYMBOL = "BTCUSDT"
TIMEFRAME = "5m"
# 2025-01-08 12:01 UTC, a minute after a close (no close at the start): six hours in which the stand-in's
# trades leave by stop, by target and by its own decision.
START_MS = 1_736_337_660_000
HOURS = 6
END_MS = START_MS + HOURS * 3_600_000
REANALYSIS_MS = 900_000  # the trader's 15m_close
REANALYSIS_DELAY_MS = 5_000  # after the close, as a `<tf>_close` timer fires (CANDLE_CLOSE_FALLBACK_SECS)
WAIT_SECS = 60.0
PUSH_SECS = 0.1  # the simulator's stream pace: each step waits for a push or two
# Signals the stand-in often takes (it enters on RSI 30-40 with the trend and shorts against it).
SIGNAL_CODE = """def check_signal(symbol, ticker, klines):
    k = klines["5m"]
    if len(get_closes(k)) < 15:
        return False
    return 30 <= get_latest_rsi(k, 14) < 45
"""


@dataclass(frozen=True)
class LiveTrade:
    symbol: str
    side: str
    opened_ms: int
    entry_price: Decimal
    size: Decimal
    closed_ms: int | None
    exit_price: Decimal | None
    close_reason: str | None
    fees_usd: Decimal


def until(condition: Callable[[], Any], what: str, timeout_secs: float = WAIT_SECS) -> Any:
    deadline = time.monotonic() + timeout_secs
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextlib.contextmanager
def paused_exchange() -> Iterator[httpx.Client]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.exchange", "--port", str(port), "--start", str(START_MS), "--paused",
         "--symbols", SYMBOL, "--push-secs", str(PUSH_SECS)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:

        def up() -> bool:
            with contextlib.suppress(httpx.TransportError):
                return client.get("/api/v3/ping").status_code == 200
            return False

        until(up, "the exchange simulator to start", 30)
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


class LiveRun:
    """The test as the live run's market: it moves the paused simulator and waits on the worker."""

    def __init__(
        self, exchange: httpx.Client, worker_url: str, *, db: psycopg.Connection[Any], user: AppUser,
        trader_id: uuid.UUID, market: BacktestMarket,
    ) -> None:  # fmt: skip
        self.exchange, self.db, self.user, self.trader_id, self.market = exchange, db, user, trader_id, market
        self.worker = httpx.Client(base_url=worker_url, timeout=10)
        self.at_ms = START_MS
        self.kline_stream = f"{SYMBOL.lower()}@kline_{TIMEFRAME}"
        self.opened: dict[str, int] = {}  # position id -> market moment it was first seen open
        self.closed: dict[str, int] = {}

    def __enter__(self) -> LiveRun:
        return self

    def __exit__(self, *_: object) -> None:
        self.worker.close()

    # What the worker reports ------------------------------------------------------------------------
    def market_state(self) -> dict[str, Any]:
        return dict(self.worker.get("/metrics/market").json())

    def trader_figures(self) -> dict[str, Any]:
        traders = self.worker.get("/metrics/traders").json()["traders"]
        return dict(traders.get(str(self.trader_id), {}))

    def holds_ticker_of(self, at_ms: int) -> bool:
        ticker = self.market_state()["tickers"].get(SYMBOL)
        return ticker is not None and ticker["eventTimeMs"] == at_ms

    def holds_market_of(self, at_ms: int) -> bool:
        """The ticker of `at_ms` and the newest candle as the stream has delivered it by then: the one
        forming, or at a close the closed one (the next forms once time has passed in it)."""
        state = self.market_state()
        ticker, series = state["tickers"].get(SYMBOL), state["klines"].get(f"{SYMBOL}@{TIMEFRAME}")
        interval_ms = INTERVAL_MS[TIMEFRAME]
        if at_ms % interval_ms:
            newest = self.market.replays[SYMBOL].candle_at(interval_ms, at_ms)
            assert newest is not None
            expected = (newest.open_time, newest.close, newest.volume_units / VOLUME_SCALE)
        else:
            closed = self.market.series(SYMBOL, TIMEFRAME)
            row = int(np.searchsorted(closed.open_time, at_ms - interval_ms))
            expected = (
                int(closed.open_time[row]), float(closed.close[row]),
                int(closed.volume_units[row]) / VOLUME_SCALE,
            )  # fmt: skip
        return (
            ticker is not None and ticker["eventTimeMs"] == at_ms and series is not None
            and series["lastOpenTimeMs"] == expected[0]
            and series["lastClose"] == pytest.approx(expected[1], rel=1e-12)
            and series["lastVolume"] == pytest.approx(expected[2], rel=1e-9)
        )  # fmt: skip

    def settled(self) -> bool:
        """Nothing in flight: no signal waiting for its decision, no order waiting for its fill, every
        match of the last run accounted for."""
        busy = self.db.execute(
            "select (select count(*) from signals where user_id = %(u)s and status = 'new')"
            " + (select count(*) from trades where user_id = %(u)s and status = 'pending')",
            {"u": self.user.id},
        ).fetchone()
        figures = self.trader_figures()
        resolved = sum(
            figures.get(key, 0)
            for key in ("signalsCreated", "alreadyLive", "cooldownSkipped", "budgetSkipped")
        )
        return (
            busy == (0,)
            and figures.get("matches", 0) == resolved
            and (
                figures.get("signalsCreated", 0)
                == figures.get("analyses", 0) + figures.get("analysisFailures", 0)
            )
        )

    def open_levels(self) -> list[Decimal]:
        rows = self.db.execute(
            "select stop_loss, take_profit from positions where user_id = %s and status = 'open'",
            (self.user.id,),
        ).fetchall()
        return [level for row in rows for level in row if level is not None]

    def note_positions(self) -> None:
        for position_id, status in self.db.execute(
            "select id::text, status::text from positions where user_id = %s", (self.user.id,)
        ).fetchall():
            self.opened.setdefault(position_id, self.at_ms)
            if status == "closed":
                self.closed.setdefault(position_id, self.at_ms)

    # Moving the market ------------------------------------------------------------------------------
    def move_to(self, at_ms: int) -> None:
        self.exchange.post("/_sim/clock", json={"market_time_ms": at_ms}).raise_for_status()

    def hold_candles(self, hold: bool) -> None:
        streams = [self.kline_stream] if hold else []
        self.exchange.post("/_sim/faults", json={"hold_streams": streams}).raise_for_status()

    def step(self, moment_ms: int, *, check: bool, reanalysis: bool) -> None:
        """Bring the worker to `moment_ms` in a live worker's order, and wait until it has acted."""
        if moment_ms - 1 > self.at_ms:
            self.move_to(moment_ms - 1)
            until(lambda: self.holds_market_of(moment_ms - 1), f"the market of {moment_ms - 1}")
        self.at_ms = moment_ms
        figures = self.trader_figures()
        runs, reanalyses = figures.get("runs", 0), figures.get("reanalyses", 0)
        self.hold_candles(True)
        self.move_to(moment_ms)
        until(lambda: self.holds_ticker_of(moment_ms), f"the ticker of {moment_ms}")
        if reanalysis:
            until(lambda: self.trader_figures().get("reanalyses", 0) > reanalyses, f"re-analysis {moment_ms}")
        # a stop or target the moment's price reaches is closed on this ticker, before anything else
        until(lambda: not self.levels_reached(moment_ms), f"the exits at {moment_ms}")
        until(self.settled, f"the worker to settle at {moment_ms}")
        self.hold_candles(False)
        until(lambda: self.holds_market_of(moment_ms), f"the candles of {moment_ms}")
        if check:
            until(lambda: self.trader_figures().get("runs", 0) > runs, f"the check at {moment_ms}")
        until(self.settled, f"the worker to settle after {moment_ms}")
        self.note_positions()

    def levels_reached(self, at_ms: int) -> bool:
        """Whether an open position's level is reached at `at_ms` (its exit is not done yet)."""
        price = self.market.price(SYMBOL, at_ms)
        rows = self.db.execute(
            "select side::text, stop_loss, take_profit from positions where user_id = %s and status = 'open'",
            (self.user.id,),
        ).fetchall()
        assert price is not None
        for side, stop, target in rows:
            if side == "long" and (
                (stop is not None and price <= stop) or (target is not None and price >= target)
            ):
                return True
            if side == "short" and (
                (stop is not None and price >= stop) or (target is not None and price <= target)
            ):
                return True
        return False

    def next_crossing(self, until_ms: int) -> int | None:
        """The first instant in (at, until_ms) an open position's level is reached: inside a leg of the
        candle path, or at a vertex (a candle that opens beyond a level), as the backtest finds it."""
        levels = self.open_levels()
        if not levels:
            return None
        at = self.at_ms
        while at < until_ms:
            vertex = self.market.next_vertex(SYMBOL, at)
            end = until_ms if vertex is None else min(vertex, until_ms)
            crossing = self.market.first_crossing(SYMBOL, at, end, levels)
            if crossing is not None:
                return crossing
            if end < until_ms and self.levels_reached(end):
                return end
            at = end
        return None

    def run(self, checks: list[int], reanalyses: list[int]) -> None:
        scheduled = sorted({*checks, *reanalyses})
        for moment in scheduled:
            while (crossing := self.next_crossing(moment)) is not None:
                self.step(crossing, check=False, reanalysis=False)
            self.step(moment, check=moment in checks, reanalysis=moment in reanalyses)

    def trades(self) -> list[LiveTrade]:
        rows = self.db.execute(
            "select p.id::text, p.symbol, p.side::text, p.exit_price, p.close_reason, p.fees_paid,"
            " sum(t.price * t.quantity) / sum(t.quantity), sum(t.quantity)"
            " from positions p join trades t on t.position_id = p.id and t.status = 'filled'"
            "  and t.side = (case p.side when 'long' then 'BUY' else 'SELL' end)::order_side"
            " where p.user_id = %s group by p.id",
            (self.user.id,),
        ).fetchall()
        found = [
            LiveTrade(
                symbol,
                side,
                self.opened[position_id],
                Decimal(entry).quantize(Decimal("1e-8")),
                size,
                self.closed.get(position_id),
                exit_price,
                reason,
                fees,
            )
            for position_id, symbol, side, exit_price, reason, fees, entry, size in rows
        ]
        return sorted(found, key=lambda trade: trade.opened_ms)


def backtest_trades(report: BacktestReport) -> list[LiveTrade]:
    return [
        LiveTrade(
            trade.symbol,
            trade.side,
            int(trade.opened_at.timestamp() * 1000),
            trade.entry_price,
            trade.size,
            int(trade.closed_at.timestamp() * 1000) if trade.closed_at else None,
            trade.exit_price,
            trade.close_reason,
            trade.fees_usd,
        )
        for trade in report.trades
    ]


def insert_trader(db: psycopg.Connection[Any], user: AppUser) -> Trader:
    row = db.execute(
        "insert into traders (user_id, name, signal_code, ai_instructions, timeframes, check_interval,"
        " reanalysis_interval, symbols) values (%s, 'RSI band', %s, 'Trade the 5 minute RSI band.',"
        " array['5m'], '5m_close', '15m_close', array['BTCUSDT']) returning *",
        (user.id, SIGNAL_CODE),
    )
    columns = [column.name for column in db.execute("select * from traders limit 0").description or ()]
    values = row.fetchone()
    assert values is not None
    record = dict(zip(columns, values, strict=True))
    record.update(id=str(record["id"]), user_id=str(record["user_id"]))
    return Trader.from_row(record)


async def run_the_backtest(
    stack: DevStack, user: AppUser, trader: Trader, recordings: dict[str, SymbolData]
) -> BacktestReport:
    settings = AnalysisSettings(functions_url=f"{stack.config.api_url}/functions/v1")
    client = AnalysisClient(
        settings, MachineAuth(keys.ANON_KEY, user.jwt)
    )  # the user's headers, as a machine's
    try:
        async with SandboxPool(SandboxConfig(processes=1)) as pool:
            return await run_backtest(
                BacktestSpec(trader, (SYMBOL,), START_MS, END_MS, ai="standin"), recordings, pool=pool,
                analyst=lambda tables, _clock: ModelAnalyst(trader, tables, client),
            )  # fmt: skip
    finally:
        await client.aclose()


def test_a_backtest_equals_a_live_run_over_the_same_window_trade_for_trade(
    stack: DevStack, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    recordings = load_directory(default_data_dir(), {SYMBOL})
    market = BacktestMarket(recordings, KlineStore(), TickerStore())
    user = create_user(db, tier="power")
    try:
        trader = insert_trader(db, user)
        report = asyncio.run(run_the_backtest(stack, user, trader, recordings))
        expected = backtest_trades(report)
        reasons = {trade.close_reason for trade in expected if trade.closed_ms is not None}
        assert reasons == {"stop_loss", "take_profit", "decision"}, "the window must hold every kind of exit"

        db.execute(
            "insert into fly_machines (user_id, machine_id, status, region, memory_mb)"
            " values (%s, %s, 'starting', 'iad', 512)",
            (user.id, machine_id := f"m-{uuid.uuid4().hex[:12]}"),
        )
        worker_log = tmp_path / "worker.log"
        with paused_exchange() as exchange, worker_log.open("w") as log:
            port = free_port()
            env = worker_env(stack, user, machine_id, port, str(exchange.base_url).rstrip("/"))
            # The stepped market has no pace: the worker's clock follows its events' times alone.
            env["MARKET_CLOCK_SYNC_SECS"] = "3600"
            # its log goes to a file: a pipe nobody reads while the market is stepped would fill and block it
            process = subprocess.Popen(
                [sys.executable, "-m", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=log, text=True
            )
            try:
                wait_healthy(f"http://127.0.0.1:{port}", process, 60)
                with LiveRun(
                    exchange, f"http://127.0.0.1:{port}", db=db, user=user, trader_id=trader.id, market=market
                ) as live:
                    until(lambda: live.holds_market_of(START_MS), "the worker's backfill and streams")
                    series = live.market_state()["klines"][f"{SYMBOL}@{TIMEFRAME}"]
                    assert series["candles"] == 1000
                    closes = market.close_times(SYMBOL, TIMEFRAME, START_MS, END_MS).tolist()
                    reanalysis_ms = START_MS - START_MS % REANALYSIS_MS + REANALYSIS_MS + REANALYSIS_DELAY_MS
                    live.run(closes, list(range(reanalysis_ms, END_MS + 1, REANALYSIS_MS)))
                    got = live.trades()
            finally:
                process.terminate()
                process.wait(timeout=30)

        assert got == expected, f"the worker's log: {worker_log}"
    finally:
        delete_user(db, user)
