"""Real clients get changes through the gateway within a second, and never another user's rows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import websockets
from realtime import AsyncRealtimeClient, RealtimePostgresChangesListenEvent, RealtimeSubscribeStates
from websockets.asyncio.client import connect

from devstack import keys
from devstack.postgres import PG_BIN_DIR
from devstack.realtime.database import Authorizer
from devstack.realtime.server import RealtimeServer, ServerConfig
from devstack.realtime.wal import DatabaseAddress, WalChange
from devstack.stack import DevStack
from tests.factories import AppUser, create_trader, create_user, delete_user, live_machine

JS_CLIENT = Path(__file__).with_name("realtime_supabase_js_client.ts")
LATENCY_LIMIT_SECS = 1.0


@pytest.fixture
def user(db: psycopg.Connection[Any]) -> Iterator[AppUser]:
    app_user = create_user(db)
    yield app_user
    delete_user(db, app_user)


@pytest.fixture
def rival(db: psycopg.Connection[Any]) -> Iterator[AppUser]:
    app_user = create_user(db)
    yield app_user
    delete_user(db, app_user)


def _commit(db: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> float:
    db.execute(query, params)
    return time.time()


async def _next(queue: asyncio.Queue[Any]) -> Any:
    return await asyncio.wait_for(queue.get(), 5)


async def test_realtime_py_gets_insert_update_and_delete_within_a_second(
    stack: DevStack, db: psycopg.Connection[Any], user: AppUser
) -> None:
    received: asyncio.Queue[tuple[str, str, float]] = asyncio.Queue()
    states: asyncio.Queue[RealtimeSubscribeStates] = asyncio.Queue()

    def on_change(payload: dict[str, Any]) -> None:
        data = payload["data"]
        row = data.get("record") or data["old_record"]
        received.put_nowait((data["type"].value, row["id"], time.time()))

    client = AsyncRealtimeClient(f"{stack.config.api_url}/realtime/v1", token=stack.config.anon_key)
    try:
        await client.set_auth(user.machine_jwt(live_machine(db, user)))
        channel = client.channel(f"traders-{user.id}")
        channel.on_postgres_changes(
            RealtimePostgresChangesListenEvent.All,
            on_change,
            table="traders",
            schema="public",
            filter=f"user_id=eq.{user.id}",
        )
        system = asyncio.Event()
        channel.on_system(lambda payload: system.set())
        await channel.subscribe(lambda state, _: states.put_nowait(state))
        assert await _next(states) == RealtimeSubscribeStates.SUBSCRIBED
        await asyncio.wait_for(system.wait(), 5)

        trader = create_trader(db, user, "latency")
        inserted_at = time.time()
        kind, trader_id, got_at = await _next(received)
        assert (kind, trader_id) == ("INSERT", str(trader))
        assert got_at - inserted_at < LATENCY_LIMIT_SECS
        committed = _commit(db, "update public.traders set name = 'x' where id = %s", (trader,))
        kind, trader_id, got_at = await _next(received)
        assert (kind, trader_id) == ("UPDATE", str(trader))
        assert got_at - committed < LATENCY_LIMIT_SECS
        committed = _commit(db, "delete from public.traders where id = %s", (trader,))
        kind, trader_id, got_at = await _next(received)
        assert (kind, trader_id) == ("DELETE", str(trader))
        assert got_at - committed < LATENCY_LIMIT_SECS
    finally:
        await client.close()


async def test_supabase_js_under_deno_gets_insert_update_and_delete_within_a_second(
    stack: DevStack, db: psycopg.Connection[Any], user: AppUser
) -> None:
    env = {
        **stack.config.deno_env(),
        "SUPABASE_URL": stack.config.api_url,
        "SUPABASE_ANON_KEY": stack.config.anon_key,
        "USER_JWT": user.jwt,
        "USER_ID": str(user.id),
    }
    deno = await asyncio.create_subprocess_exec(
        str(stack.config.deno_bin), "run", "--allow-net", "--allow-env", "--allow-read", "--no-prompt",
        "--no-lock", str(JS_CLIENT),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert deno.stdout is not None and deno.stdin is not None

    async def line() -> dict[str, Any]:
        assert deno.stdout is not None
        raw = await asyncio.wait_for(deno.stdout.readline(), 120)  # a loaded machine starts Deno slowly
        assert raw, "the supabase-js client exited"
        return dict(json.loads(raw))

    try:
        seen: list[dict[str, Any]] = []
        while not any(entry.get("system") == "Subscribed to PostgreSQL" for entry in seen):
            seen.append(await line())
        assert {"status": "SUBSCRIBED", "error": None, "vsn": "2.0.0"} in seen
        # Each write waits for its event: the server selects a row by key to authorize it, so a row
        # deleted before its UPDATE is checked would (as on Supabase) withhold that UPDATE.
        trader = create_trader(db, user, "js")
        committed, events = [time.time()], [await line()]
        committed.append(_commit(db, "update public.traders set name = 'js2' where id = %s", (trader,)))
        events.append(await line())
        committed.append(_commit(db, "delete from public.traders where id = %s", (trader,)))
        events.append(await line())
    finally:
        deno.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(deno.wait(), 10)
        if deno.returncode is None:
            deno.kill()
            await deno.wait()

    assert [(event["type"], event["id"]) for event in events] == [
        ("INSERT", str(trader)),
        ("UPDATE", str(trader)),
        ("DELETE", str(trader)),
    ]
    for event, committed_at in zip(events, committed, strict=True):
        assert event["received_ms"] / 1000 - committed_at < LATENCY_LIMIT_SECS


async def test_a_subscriber_never_sees_another_users_changes(
    stack: DevStack, db: psycopg.Connection[Any], user: AppUser, rival: AppUser
) -> None:
    # No filter at all: row level security alone must keep the rival's rows away.
    url = f"ws://127.0.0.1:{stack.config.api_port}/realtime/v1/websocket?apikey={keys.ANON_KEY}&vsn=1.0.0"
    binding = {"event": "*", "schema": "public", "table": "traders"}
    join = {"config": {"postgres_changes": [binding]}, "access_token": user.jwt}
    rng = random.Random(7)
    mine: list[uuid.UUID] = []
    theirs: list[uuid.UUID] = []
    async with connect(url) as socket:
        message = {"topic": "realtime:all-traders", "event": "phx_join", "payload": join, "ref": "1"}
        await socket.send(json.dumps(message))
        while json.loads(await asyncio.wait_for(socket.recv(), 5))["event"] != "system":
            pass
        for step in range(100):
            owner, ids = (user, mine) if step % 10 == 0 else (rival, theirs)
            action = rng.random()
            if not ids or action < 0.4:
                ids.append(create_trader(db, owner, f"isolation {step}"))
            elif action < 0.8:
                db.execute("update public.traders set name = %s where id = %s", (f"n{step}", rng.choice(ids)))
            else:
                db.execute("delete from public.traders where id = %s", (ids.pop(rng.randrange(len(ids))),))
        marker = create_trader(db, user, "the last write")
        delivered: list[dict[str, Any]] = []
        while not delivered or (delivered[-1].get("record") or {}).get("id") != str(marker):
            frame = json.loads(await asyncio.wait_for(socket.recv(), 5))
            if frame["event"] == "postgres_changes":
                delivered.append(frame["payload"]["data"])

    rows = [data.get("record") or data["old_record"] for data in delivered]
    assert {row["id"] for row in rows} & {str(i) for i in theirs} == set()
    assert all(row.get("user_id", str(user.id)) == str(user.id) for row in rows)
    assert len(rows) >= 2  # the user's own writes did arrive (some may be withheld: deleted before checked)


async def test_a_client_that_stops_reading_is_dropped_and_others_keep_their_stream(
    stack: DevStack, db: psycopg.Connection[Any], user: AppUser
) -> None:
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        database=DatabaseAddress("127.0.0.1", stack.config.db_port, "postgres", "postgres", "postgres"),
        jwks=stack.config.jwks_with_legacy_secret(),
        slot_name=f"test_realtime_slow_{uuid.uuid4().hex[:8]}",
        recvlogical_bin=PG_BIN_DIR / "pg_recvlogical",
        send_timeout_secs=1.0,
    )
    server = RealtimeServer(config)
    started = asyncio.Event()
    serving = asyncio.create_task(server.run(started))
    trader = create_trader(db, user, "flood")
    updates = 400
    try:
        await asyncio.wait_for(started.wait(), 30)
        url = f"ws://127.0.0.1:{server.bound_port}/socket/websocket?apikey={keys.ANON_KEY}&vsn=2.0.0"
        bindings = [{"event": "UPDATE", "table": "traders", "filter": f"id=eq.{trader}"}]
        join = {"config": {"postgres_changes": bindings}, "access_token": user.jwt}
        # The slow client's library stops reading its socket once one message is waiting.
        async with connect(url, max_queue=1) as slow, connect(url) as healthy:
            for socket in (slow, healthy):
                await socket.send(json.dumps(["1", "1", "realtime:flood", "phx_join", join]))
                while json.loads(await asyncio.wait_for(socket.recv(), 5))[3] != "system":
                    pass
            for step in range(updates):  # ~60 KB a frame: megabytes nobody reads on the slow socket
                db.execute(
                    "update public.traders set signal_code = %s where id = %s",
                    (f"# {step}\n" + "x" * 60_000, trader),
                )
            received = 0
            while received < updates:
                frame = json.loads(await asyncio.wait_for(healthy.recv(), 10))
                received += frame[3] == "postgres_changes"
            async with asyncio.timeout(15):
                while server.connection_count > 1:  # noqa: ASYNC110 - server state, no event to wait on
                    await asyncio.sleep(0.1)
            with pytest.raises(websockets.ConnectionClosed):
                async with asyncio.timeout(15):
                    while True:
                        await slow.recv()
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
    assert received == updates
    assert db.execute(
        "select count(*) from pg_replication_slots where slot_name = %s", (config.slot_name,)
    ).fetchone() == (0,)


async def test_a_batch_is_checked_only_once_its_transactions_are_visible(stack: DevStack) -> None:
    # The walsender sends a commit a moment before the committing backend leaves the proc array; a row
    # looked up then is missing and its change would be refused to everyone. Here the moment is held open.
    authorizer = Authorizer(
        DatabaseAddress("127.0.0.1", stack.config.db_port, "postgres", "postgres", "postgres")
    )
    with stack.postgres.connect() as holder:  # its transaction stays open until the commit below
        row = holder.execute("select pg_current_xact_id()::text::bigint").fetchone()
        assert row is not None
        change = WalChange(
            action="INSERT", schema="public", table="notifications", commit_timestamp="",
            xid=row[0] % 2**32, new={}, old=None, type_oids={}, pk=("id",), received_monotonic=0.0,
        )  # fmt: skip
        try:
            async with asyncio.TaskGroup() as tasks:
                waiting = tasks.create_task(authorizer.await_visible([change]))
                await asyncio.sleep(0.5)
                assert not waiting.done(), "checked while its transaction was still in progress"
                await asyncio.to_thread(holder.commit)
                await asyncio.wait_for(asyncio.shield(waiting), 1)
        finally:
            await authorizer.close()
