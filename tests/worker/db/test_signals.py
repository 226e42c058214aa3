"""The signals table through PostgREST as the machine: worker ids, live conflicts, conditional closing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from devstack.stack import DevStack
from tests.factories import MachineUser, create_trader, create_user, delete_user
from tests.worker.db.helpers import machine_tables
from tests.worker.signals.harness import signal_rows
from worker.db.client import Refused
from worker.db.signals import InsertOutcome


async def test_a_signal_is_created_once_with_the_workers_id_even_when_the_insert_is_retried(
    stack: DevStack, db: psycopg.Connection[Any], machine: MachineUser
) -> None:
    trader_id = create_trader(db, machine.user)
    signal_id = uuid.uuid4()
    async with machine_tables(machine.token, machine.user.id) as tables:
        store = tables.signals
        first = await store.insert(signal_id, trader_id, "BTCUSDT", Decimal("97123.45000001"))
        retried = await store.insert(signal_id, trader_id, "BTCUSDT", Decimal("97123.45000001"))

    rows = signal_rows(db, trader_id)
    assert (first, retried) == (InsertOutcome.CREATED, InsertOutcome.CREATED)
    assert [(r["id"], r["symbol"], r["status"], r["trigger_price"]) for r in rows] == [
        (signal_id, "BTCUSDT", "new", Decimal("97123.45000001"))
    ]


async def test_a_second_live_signal_for_the_trader_and_symbol_is_already_live_not_an_error(
    stack: DevStack, db: psycopg.Connection[Any], machine: MachineUser
) -> None:
    trader_id = create_trader(db, machine.user)
    async with machine_tables(machine.token, machine.user.id) as tables:
        store = tables.signals
        await store.insert(uuid.uuid4(), trader_id, "BTCUSDT", Decimal(1))
        db.execute("update public.signals set status = 'watching' where trader_id = %s", (trader_id,))
        second = await store.insert(uuid.uuid4(), trader_id, "BTCUSDT", Decimal(2))
        other_symbol = await store.insert(uuid.uuid4(), trader_id, "ETHUSDT", Decimal(3))
        live = await store.live_symbols(trader_id, ["BTCUSDT", "ETHUSDT", "SOLUSDT"])

    assert second is InsertOutcome.ALREADY_LIVE
    assert other_symbol is InsertOutcome.CREATED
    assert live == {"BTCUSDT", "ETHUSDT"}
    assert len(signal_rows(db, trader_id)) == 2


async def test_closing_touches_only_new_signals_and_frees_the_symbol(
    stack: DevStack, db: psycopg.Connection[Any], machine: MachineUser
) -> None:
    trader_id = create_trader(db, machine.user)
    fresh, watched = uuid.uuid4(), uuid.uuid4()
    async with machine_tables(machine.token, machine.user.id) as tables:
        store = tables.signals
        await store.insert(fresh, trader_id, "BTCUSDT", Decimal(1))
        await store.insert(watched, trader_id, "ETHUSDT", Decimal(1))
        db.execute("update public.signals set status = 'watching' where id = %s", (watched,))
        closed = await store.close_if_new(fresh, "analysis failed (unavailable): " + "x" * 600)
        again = await store.close_if_new(fresh, "twice")
        not_new = await store.close_if_new(watched, "must not close a watched signal")
        reopened = await store.insert(uuid.uuid4(), trader_id, "BTCUSDT", Decimal(2))

    rows = {r["id"]: r for r in signal_rows(db, trader_id)}
    assert (closed, again, not_new, reopened) == (True, False, False, InsertOutcome.CREATED)
    assert rows[fresh]["status"] == "closed"
    assert rows[fresh]["close_reason"].startswith("analysis failed (unavailable): ")
    assert len(rows[fresh]["close_reason"]) == 500
    assert rows[watched]["status"] == "watching"


async def test_recent_and_stranded_queries_see_only_this_users_signals(
    stack: DevStack, db: psycopg.Connection[Any], machine: MachineUser
) -> None:
    trader_id = create_trader(db, machine.user)
    stranger = create_user(db)
    try:
        strangers_trader = create_trader(db, stranger)
        db.execute(
            "insert into public.signals (trader_id, user_id, symbol, trigger_price, created_at) values"
            " (%s, %s, 'BTCUSDT', 1, now() - interval '2 hours'),"
            " (%s, %s, 'BTCUSDT', 1, now() - interval '2 hours')",
            (trader_id, machine.user.id, strangers_trader, stranger.id),
        )
        async with machine_tables(machine.token, machine.user.id) as tables:
            store = tables.signals
            await store.insert(uuid.uuid4(), trader_id, "ETHUSDT", Decimal(1))
            now = datetime.now(UTC)
            recent = await store.recent(trader_id, now - timedelta(minutes=5))
            stranded = await store.new_before(now - timedelta(hours=1))
    finally:
        delete_user(db, stranger)

    assert set(recent) == {"ETHUSDT"}
    old = db.execute(
        "select id from public.signals where trader_id = %s and symbol = 'BTCUSDT'", (trader_id,)
    ).fetchall()
    assert stranded == [old[0][0]]


async def test_a_signal_for_another_users_trader_is_refused_as_if_the_trader_did_not_exist(
    stack: DevStack, db: psycopg.Connection[Any], machine: MachineUser
) -> None:
    stranger = create_user(db)
    try:
        strangers_trader = create_trader(db, stranger)
        async with machine_tables(machine.token, machine.user.id) as tables:
            store = tables.signals
            with pytest.raises(Refused) as strangers:
                await store.insert(uuid.uuid4(), strangers_trader, "BTCUSDT", Decimal(1))
            with pytest.raises(Refused) as missing:
                await store.insert(uuid.uuid4(), uuid.uuid4(), "BTCUSDT", Decimal(1))
        assert signal_rows(db, strangers_trader) == []
    finally:
        delete_user(db, stranger)

    assert (strangers.value.status, strangers.value.code) == (missing.value.status, missing.value.code)
    assert strangers.value.code == "P0002"
