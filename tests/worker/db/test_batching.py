"""Transition calls made together reach PostgREST as one batch, and each caller still gets its own answer."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from devstack.keys import ANON_KEY
from devstack.stack import DevStack
from tests.factories import MachineUser, create_trader
from tests.worker.db.helpers import REST_URL
from worker.clock import LiveClock
from worker.db.client import Database, MachineAuth, Refused, StaleState
from worker.db.trading import TradingRows
from worker.domain.enums import OrderSide, OrderStatus, OrderType, TradingMode
from worker.domain.orders import ClientOrderId
from worker.domain.positions import CloseReason, IntentKind, OrderIntent, TrailingState


class CountingTransport(httpx.AsyncHTTPTransport):
    """The real transport, counting the requests to each RPC; `hold` keeps one RPC's requests back."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []
        self.hold: dict[str, asyncio.Event] = {}
        self.held = asyncio.Event()  # a held request arrived

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        name = request.url.path.rpartition("/rpc/")[2]
        self.requests.append(name)
        if name in self.hold:
            self.held.set()
            await self.hold[name].wait()
        return await super().handle_async_request(request)


@contextlib.asynccontextmanager
async def trading_rows(machine: MachineUser, transport: CountingTransport) -> AsyncIterator[TradingRows]:
    database = Database(
        REST_URL, MachineAuth(ANON_KEY, machine.token), clock=LiveClock(), transport=transport
    )
    try:
        yield TradingRows(database)
    finally:
        await database.aclose()


def _signals(db: psycopg.Connection[Any], machine: MachineUser, symbols: list[str]) -> list[uuid.UUID]:
    trader_id = create_trader(db, machine.user)
    ids = [uuid.uuid4() for _ in symbols]
    for signal_id, symbol in zip(ids, symbols, strict=True):
        db.execute(
            "insert into public.signals (id, trader_id, user_id, symbol, trigger_price)"
            " values (%s, %s, %s, %s, 1)",
            (signal_id, trader_id, machine.user.id, symbol),
        )
    return ids


async def _record(
    rows: TradingRows, signal_id: uuid.UUID, symbol: str, cid: str, kind: IntentKind
) -> OrderStatus:
    intent = (
        OrderIntent(kind, None)
        if kind is IntentKind.OPEN
        else OrderIntent(kind, uuid.uuid4(), reason=CloseReason.STOP_LOSS)
    )
    recorded = await rows.record_order(
        ClientOrderId(cid),
        symbol,
        OrderSide.BUY,
        Decimal("0.5"),
        TradingMode.PAPER,
        signal_id=signal_id,
        position_id=None,
        order_type=OrderType.MARKET,
        price=Decimal(100),
        intent=intent,
    )
    return recorded.status


async def test_orders_recorded_at_once_go_in_one_request_and_each_caller_gets_its_own_row(
    stack: DevStack, db: psycopg.Connection[Any], machine: MachineUser
) -> None:
    symbols = [f"B{n}USDT" for n in range(5)]
    signal_ids = _signals(db, machine, symbols)
    transport = CountingTransport()
    async with trading_rows(machine, transport) as rows:
        statuses = await asyncio.gather(
            *(
                _record(rows, signal_id, symbol, f"tmbatch{n}", IntentKind.CLOSE)
                for n, (signal_id, symbol) in enumerate(zip(signal_ids, symbols, strict=True))
            )
        )

    assert statuses == [OrderStatus.PENDING] * 5
    assert transport.requests == ["trading_record_orders"]
    recorded = db.execute(
        "select client_order_id, symbol, signal_id from public.trades where user_id = %s"
        " order by client_order_id",
        (machine.user.id,),
    ).fetchall()
    assert recorded == [(f"tmbatch{n}", symbols[n], signal_ids[n]) for n in range(5)]


async def test_a_call_the_database_refuses_is_refused_to_its_caller_alone(
    stack: DevStack, db: psycopg.Connection[Any], machine: MachineUser
) -> None:
    signal_ids = _signals(db, machine, ["BTCUSDT", "ETHUSDT"])
    transport = CountingTransport()
    async with trading_rows(machine, transport) as rows:
        answers = await asyncio.gather(
            _record(rows, signal_ids[0], "BTCUSDT", "tmgood1", IntentKind.OPEN),
            _record(rows, uuid.uuid4(), "BTCUSDT", "tmmissing", IntentKind.OPEN),  # no such signal
            _record(rows, signal_ids[1], "ETHUSDT", "tmgood2", IntentKind.OPEN),
            return_exceptions=True,
        )

    assert answers[0] == answers[2] == OrderStatus.PENDING
    assert isinstance(answers[1], Refused) and "no signal" in str(answers[1])
    # The batch was refused whole, then each call went alone.
    assert transport.requests == ["trading_record_orders"] + ["trading_record_order"] * 3
    recorded = db.execute(
        "select client_order_id from public.trades where user_id = %s order by client_order_id",
        (machine.user.id,),
    ).fetchall()
    assert recorded == [("tmgood1",), ("tmgood2",)]


async def test_bookkeeping_waits_while_a_close_order_is_being_recorded(
    stack: DevStack, db: psycopg.Connection[Any], machine: MachineUser
) -> None:
    (signal_id,) = _signals(db, machine, ["BTCUSDT"])
    transport = CountingTransport()
    released = transport.hold["trading_record_order"] = asyncio.Event()
    async with trading_rows(machine, transport) as rows:
        close = asyncio.create_task(_record(rows, signal_id, "BTCUSDT", "tmclose", IntentKind.CLOSE))
        await transport.held.wait()
        stop = TrailingState(Decimal(100), Decimal(95))
        trailing = asyncio.create_task(rows.store_trailing(uuid.uuid4(), stop))
        await asyncio.sleep(0.2)  # long enough for the trailing stop's request to go out, were it not held
        assert transport.requests == ["trading_record_order"]
        released.set()
        assert await close is OrderStatus.PENDING
        with pytest.raises(StaleState):  # no such position: the write was sent, after the close's order
            await trailing
    assert transport.requests == ["trading_record_order", "trading_update_position"]
