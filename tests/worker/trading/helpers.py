"""Builders for trading tests: a user's trader, signals, a paper executor wired to the real local stack."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

from devstack.keys import ANON_KEY
from tests.factories import AppUser, create_trader, create_user
from worker.domain.decision import Decision
from worker.domain.enums import AnalysisDecision
from worker.domain.trader import Trader
from worker.execution import SignalContext
from worker.trading.config import TradingConfig
from worker.trading.executor import TradeExecutor
from worker.trading.guardrails import Guardrails
from worker.trading.store import TradingStore
from worker.trading.venue import PaperVenue, Venue

REST_URL = "http://127.0.0.1:54321/rest/v1"


@dataclass
class Prices:
    """The price feed the executor reads (a plain map: tests set the market)."""

    prices: dict[str, Decimal] = field(default_factory=dict)
    atrs: dict[str, Decimal] = field(default_factory=dict)

    def last_price(self, symbol: str) -> Decimal | None:
        return self.prices.get(symbol)

    def atr(self, symbol: str) -> Decimal | None:
        return self.atrs.get(symbol)


@dataclass
class TradingEnv:
    db: psycopg.Connection[Any]
    user: AppUser
    trader: Trader
    store: TradingStore
    executor: TradeExecutor
    prices: Prices

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
        price = self.prices.prices.get(symbol, Decimal(40000))
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
    trader = set_risk(db, trader_id, *risk)
    config = config or TradingConfig(paper_slippage_rate=Decimal(0))
    store = TradingStore(REST_URL, ANON_KEY, user.machine_jwt(f"m-{user.id.hex[:8]}"))
    prices = Prices({"BTCUSDT": Decimal(40000), "ETHUSDT": Decimal(2000)})
    venue = venue or PaperVenue(config.paper_fee_rate, config.paper_slippage_rate)
    executor = TradeExecutor(store, venue, Guardrails(config), config, prices)
    try:
        yield TradingEnv(db, user, trader, store, executor, prices)
    finally:
        await store.aclose()
