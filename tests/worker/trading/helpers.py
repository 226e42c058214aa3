"""Builders for trading tests: a user's trader, signals, and the trading parts as the app builds them
(`worker.app.build_trading`) against the real local stack, with a market the test sets."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

from devstack.keys import ANON_KEY
from tests.factories import AppUser, create_trader, create_user, live_machine, ticker, trade_for_real
from tests.worker.db.helpers import machine_tables
from worker.app import Trading, build_trading
from worker.clock import LiveClock
from worker.db import Tables
from worker.db.client import MachineAuth
from worker.domain.decision import Decision
from worker.domain.enums import AnalysisDecision, TradingMode
from worker.domain.signal import SignalContext
from worker.domain.trader import Trader
from worker.market.store import KlineStore
from worker.market.tickers import TickerStore
from worker.signals.analysis import AnalysisClient, AnalysisSettings
from worker.trading.config import TradingConfig
from worker.trading.executor import TradeExecutor
from worker.trading.guardrails import Guardrails
from worker.trading.positions import OpenPositions
from worker.trading.venue import PaperVenue, Venue

FUNCTIONS_URL = "http://127.0.0.1:54321/functions/v1"


@dataclass
class TradingEnv:
    db: psycopg.Connection[Any]
    user: AppUser
    trader: Trader
    tables: Tables
    trading: Trading
    tickers: TickerStore
    clock: LiveClock
    _event_ms: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def executor(self) -> TradeExecutor:
        return self.trading.executor

    @property
    def positions(self) -> OpenPositions:
        return self.trading.positions

    @property
    def guardrails(self) -> Guardrails:
        return self.trading.guardrails

    def set_price(self, symbol: str, price: Decimal) -> None:
        """The market moves: a ticker update at `price` (as the feed would store it)."""
        self.tickers.update(ticker(symbol, price, next(self._event_ms)))

    def new_signal(
        self, symbol: str = "BTCUSDT", price: Decimal = Decimal(40000), status: str = "new"
    ) -> uuid.UUID:
        signal_id = uuid.uuid4()
        self.db.execute(
            "insert into public.signals (id, trader_id, user_id, symbol, trigger_price, status)"
            " values (%s, %s, %s, %s, %s, %s)",
            (signal_id, self.trader.id, self.user.id, symbol, price, status),
        )
        return signal_id

    def context(
        self, signal_id: uuid.UUID, symbol: str = "BTCUSDT", analysis_id: uuid.UUID | None = None
    ) -> SignalContext:
        price = self.trading.prices.last_price(symbol) or Decimal(40000)
        return SignalContext(signal_id, self.trader, symbol, price, price, analysis_id or uuid.uuid4())

    def row(self, sql: str, *args: object) -> dict[str, Any]:
        cursor = self.db.execute(sql, args)
        names = [d.name for d in cursor.description or []]
        found = cursor.fetchone()
        assert found is not None, sql
        return dict(zip(names, found, strict=True))

    def rows(self, sql: str, *args: object) -> list[dict[str, Any]]:
        cursor = self.db.execute(sql, args)
        names = [d.name for d in cursor.description or []]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def trader_of(db: psycopg.Connection[Any], trader_id: uuid.UUID) -> Trader:
    cursor = db.execute("select * from public.traders where id = %s", (trader_id,))
    names = [d.name for d in cursor.description or []]
    found = cursor.fetchone()
    assert found is not None
    row = dict(zip(names, found, strict=True))
    return Trader.from_row(row)


def set_risk(
    db: psycopg.Connection[Any], trader_id: uuid.UUID, max_usd: int, max_open: int, daily_loss: int
) -> Trader:
    db.execute(
        "update public.traders set risk = jsonb_build_object('max_position_size_usd', %s::numeric,"
        " 'max_open_positions', %s::int, 'daily_loss_limit_usd', %s::numeric) where id = %s",
        (max_usd, max_open, daily_loss, trader_id),
    )
    return trader_of(db, trader_id)


def decision(kind: AnalysisDecision, **metadata: str) -> Decision:
    fields = {name: Decimal(value) for name, value in metadata.items()}
    return Decision(decision=kind, reasoning="test", confidence=80, **fields)  # type: ignore[arg-type]


@asynccontextmanager
async def trading_env(
    db: psycopg.Connection[Any],
    *,
    config: TradingConfig | None = None,
    venue: Venue | None = None,
    user: AppUser | None = None,
    risk: tuple[int, int, int] = (1000, 3, 500),
) -> AsyncIterator[TradingEnv]:
    user = user or create_user(db)
    trader_id = create_trader(db, user)
    if venue is not None and venue.mode is TradingMode.REAL:
        trade_for_real(db, user, trader_id)  # a trader trades only on its own mode's venue
    trader = set_risk(db, trader_id, *risk)
    config = config or TradingConfig(paper_slippage_rate=Decimal(0))
    token = user.machine_jwt(live_machine(db, user))
    analysis = AnalysisClient(AnalysisSettings(functions_url=FUNCTIONS_URL), MachineAuth(ANON_KEY, token))
    async with machine_tables(token, user.id) as tables:
        paper = PaperVenue(config.paper_fee_rate, config.paper_slippage_rate, tables.trading.paper_balance)
        tickers, clock = TickerStore(), LiveClock()
        trading = build_trading(
            config,
            tables,
            venue or paper,
            tickers=tickers,
            klines=KlineStore(),
            analyzer=analysis,
            clock=clock,
        )
        env = TradingEnv(db, user, trader, tables, trading, tickers, clock)
        env.set_price("BTCUSDT", Decimal(40000))
        env.set_price("ETHUSDT", Decimal(2000))
        try:
            yield env
        finally:
            await analysis.aclose()
