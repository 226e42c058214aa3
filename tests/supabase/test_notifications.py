"""Notifications end to end: each kind reaches the user's app over Realtime within a second of its event, and
reaches the webhook and the Telegram stand-in exactly once although the functions runtime and the stand-in
restart between delivery runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psycopg
import pytest
from realtime import AsyncRealtimeClient, RealtimePostgresChangesListenEvent, RealtimeSubscribeStates

from devstack.config import TELEGRAM_PORT
from devstack.stack import DevStack
from tests.factories import AppUser, create_trader, create_user, delete_user
from worker.domain.enums import NotificationKind

LATENCY_LIMIT_SECS = 1.0
TELEGRAM_URL = f"http://127.0.0.1:{TELEGRAM_PORT}"


@pytest.fixture
def user(db: psycopg.Connection[Any]) -> Iterator[AppUser]:
    app_user = create_user(db)
    yield app_user
    delete_user(db, app_user)


class Webhook:
    """A local receiver that records every POST (answering `fail_first` times with 503 first)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[tuple[int, str | None, dict[str, Any]]] = []
        self._fail_left = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                status = 503 if outer._fail_left > 0 else 200
                outer._fail_left -= 1
                outer.received.append((status, self.headers.get("idempotency-key"), body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _rest(stack: DevStack, jwt: str) -> httpx.Client:
    headers = {"apikey": stack.config.anon_key, "Authorization": f"Bearer {jwt}"}
    return httpx.Client(base_url=f"{stack.config.api_url}/rest/v1", headers=headers, timeout=10)


async def _subscribed(stack: DevStack, user: AppUser, on_insert: Any) -> AsyncRealtimeClient:
    client = AsyncRealtimeClient(f"{stack.config.api_url}/realtime/v1", token=stack.config.anon_key)
    await client.set_auth(user.jwt)
    channel = client.channel(f"notifications-{user.id}")
    channel.on_postgres_changes(
        RealtimePostgresChangesListenEvent.Insert,
        on_insert,
        table="notifications",
        schema="public",
        filter=f"user_id=eq.{user.id}",
    )
    states: asyncio.Queue[RealtimeSubscribeStates] = asyncio.Queue()
    system = asyncio.Event()
    channel.on_system(lambda _: system.set())
    await channel.subscribe(lambda state, _: states.put_nowait(state))
    assert await asyncio.wait_for(states.get(), 5) == RealtimeSubscribeStates.SUBSCRIBED
    await asyncio.wait_for(system.wait(), 5)
    return client


def _raise_each_kind(stack: DevStack, db: psycopg.Connection[Any], user: AppUser) -> dict[str, float]:
    """Cause one event of every kind the way production does; returns when each was committed."""
    raised: dict[str, float] = {}
    # The user's machine: live (so its token is honoured) but silent for ten minutes, so the stale-machine
    # sweep below turns it to error.
    machine_id = f"m-{secrets.token_hex(6)}"
    db.execute(
        "insert into public.fly_machines (user_id, machine_id, status, region, memory_mb, last_heartbeat)"
        " values (%s, %s, 'running', 'iad', 256, now() - interval '10 minutes')",
        (user.id, machine_id),
    )
    # The worker's events, made as the worker makes them (its token through PostgREST, or the rows the
    # trading_* functions write); each notifies in the same transaction.
    trader_id = create_trader(db, user, "notified trader")
    signal_id = uuid.uuid4()
    with _rest(stack, user.machine_jwt(machine_id)) as machine:
        signal = {"signal_id": str(signal_id), "trader_id": str(trader_id), "symbol": "BTCUSDT",
                  "trigger_price": "42000"}  # fmt: skip
        assert machine.post("/rpc/trading_create_signal", json=signal).json() == "created"
        raised[NotificationKind.SIGNAL_NEW] = time.time()
    position = db.execute(
        "insert into public.positions (signal_id, user_id, symbol, side, entry_price, size)"
        " values (%s, %s, 'BTCUSDT', 'long', 42000, 0.01) returning id",
        (signal_id, user.id),
    ).fetchone()
    assert position is not None
    raised[NotificationKind.POSITION_OPENED] = time.time()
    db.execute(
        "update public.positions set status = 'closed', size = 0, exit_price = 43000, pnl = 10,"
        " closed_at = now(), close_reason = 'take_profit' where id = %s",
        (position[0],),
    )
    raised[NotificationKind.POSITION_CLOSED] = time.time()
    db.execute(
        "insert into public.trades (user_id, signal_id, type, side, symbol, quantity, status,"
        " client_order_id, error_message)"
        " values (%s, %s, 'paper', 'BUY', 'BTCUSDT', 0.01, 'failed', %s, 'rejected')",
        (user.id, signal_id, f"tm-{uuid.uuid4().hex[:20]}"),
    )
    raised[NotificationKind.TRADE_FAILED] = time.time()
    with _rest(stack, user.machine_jwt(machine_id)) as machine:
        body = {"trader_id": str(trader_id), "error_message": "signal code stopped"}
        assert machine.post("/rpc/report_trader_error", json=body).status_code in (200, 204)
        raised[NotificationKind.TRADER_ERROR] = time.time()
    with _rest(stack, stack.config.service_role_key) as service:
        response = service.post(
            "/notifications",
            json={"user_id": str(user.id), "kind": "machine_resized", "title": "Machine resized"},
        )
        raised[NotificationKind.MACHINE_RESIZED] = time.time()
        assert response.status_code == 201, response.text
    db.execute("select private.mark_stale_machines()")  # what pg_cron runs every minute
    raised[NotificationKind.MACHINE_ERROR] = time.time()
    # An hour of machine time (the interval the error left open) is over this user's tiny budget.
    db.execute(
        "update public.machine_usage set started_at = now() - interval '1 hour' where user_id = %s",
        (user.id,),
    )
    db.execute("insert into public.cost_budgets (user_id, monthly_budget_usd) values (%s, 1e-6)", (user.id,))
    with _rest(stack, stack.config.service_role_key) as service:
        response = service.post("/rpc/reserve_ai_tokens", json={"user_id": str(user.id), "tokens": 100})
        raised[NotificationKind.BUDGET_EXCEEDED] = time.time()
        assert response.json()["reason"] == "cost_budget_exceeded"
    return raised


async def test_each_kind_reaches_the_app_within_a_second_of_its_event(
    stack: DevStack, db: psycopg.Connection[Any], user: AppUser
) -> None:
    arrived: dict[str, float] = {}

    all_arrived = asyncio.Event()

    def on_insert(payload: dict[str, Any]) -> None:
        arrived.setdefault(payload["data"]["record"]["kind"], time.time())
        if len(arrived) == len(NotificationKind):
            all_arrived.set()

    client = await _subscribed(stack, user, on_insert)
    try:
        raised = await asyncio.to_thread(_raise_each_kind, stack, db, user)
        with contextlib.suppress(TimeoutError):  # the assertion below names what did not arrive
            await asyncio.wait_for(all_arrived.wait(), 5)
    finally:
        await client.close()

    missing = {kind.value for kind in NotificationKind} - set(arrived)
    assert not missing, f"never arrived over Realtime: {sorted(missing)} (arrived: {sorted(arrived)})"
    late = {
        kind: round(arrived[kind] - at, 3)
        for kind, at in raised.items()
        if arrived[kind] - at > LATENCY_LIMIT_SECS
    }
    assert late == {}, f"arrived later than {LATENCY_LIMIT_SECS}s after the event: {late}"


def _notify(stack: DevStack) -> dict[str, Any]:
    headers = {
        "apikey": stack.config.service_role_key,
        "Authorization": f"Bearer {stack.config.service_role_key}",
    }
    response = httpx.post(f"{stack.config.api_url}/functions/v1/notify", json={}, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_deliveries_arrive_exactly_once_across_retries_and_a_restart(
    stack: DevStack, db: psycopg.Connection[Any], user: AppUser
) -> None:
    hook = Webhook(fail_first=2)
    bot_token = f"{secrets.randbelow(10**9)}:{secrets.token_urlsafe(30)}"
    try:
        db.execute(
            "insert into public.notification_preferences (user_id, webhook_url) values (%s, %s)",
            (user.id, hook.url),
        )
        with _rest(stack, user.jwt) as client:
            response = client.post("/rpc/set_telegram_bot", json={"bot_token": bot_token, "chat_id": "5150"})
            assert response.status_code == 204, response.text
        faults = {
            "token": bot_token,
            "faults": [{"kind": "rate_limit", "retryAfterSecs": 1}, {"kind": "server_error"}],
        }
        httpx.post(f"{TELEGRAM_URL}/_control/faults", json=faults).raise_for_status()
        ids = [
            str(row[0])
            for row in db.execute(
                "insert into public.notifications (user_id, kind, title) select %s, k, 'about ' || k::text"
                " from unnest(enum_range(null::public.notification_kind)) as k returning id",
                (user.id,),
            ).fetchall()
        ]

        # The inserts made the database call notify (pg_net); one more run, then the restart.
        _notify(stack)
        # Restart what delivery depends on, between runs (no send in flight: a run killed after a receiver
        # accepted but before it was recorded would send again once its claim lapses; see README).
        for _ in range(100):
            row = db.execute(
                "select count(*) from public.notification_deliveries"
                " where user_id = %s and status = 'delivering'",
                (user.id,),
            ).fetchone()
            if row == (0,):
                break
            time.sleep(0.1)
        for part in ("functions", "telegram"):
            assert stack.registry.stop(part)
        stack.up()
        rounds = 0
        while rounds < 10:
            pending = db.execute(
                "select count(*) from public.notification_deliveries"
                " where user_id = %s and status <> 'delivered'",
                (user.id,),
            ).fetchone()
            if pending == (0,):
                break
            time.sleep(0.5)  # the backoff is seconds; let it pass for real rather than rewrite it
            db.execute(
                "update public.notification_deliveries set next_attempt_at = least(next_attempt_at, now())"
                " where user_id = %s and status = 'pending'"
                " and next_attempt_at < now() + interval '2 seconds'",
                (user.id,),
            )
            _notify(stack)
            rounds += 1
    finally:
        hook.close()

    attempts = db.execute(
        "select channel::text, sum(attempts) from public.notification_deliveries where user_id = %s"
        " group by channel order by channel",
        (user.id,),
    ).fetchall()
    assert [channel for channel, _ in attempts] == ["telegram", "webhook"]
    assert all(total >= len(ids) + 2 for _, total in attempts), f"the faults were retried: {attempts}"
    statuses = db.execute(
        "select channel::text, count(*) filter (where status = 'delivered')"
        " from public.notification_deliveries where user_id = %s group by channel order by channel",
        (user.id,),
    ).fetchall()
    assert statuses == [("telegram", len(ids)), ("webhook", len(ids))]
    accepted = sorted(key or "" for status, key, _ in hook.received if status == 200)
    assert accepted == sorted(ids), "one accepted webhook call per notification"
    messages = httpx.get(f"{TELEGRAM_URL}/_control/messages", params={"token": bot_token}).json()["messages"]
    assert sorted(message["text"] for message in messages) == sorted(
        f"about {kind.value}" for kind in NotificationKind
    ), "one Telegram message per notification, none lost or repeated by the restart"
