"""The trader sync against the real stack: realtime-py through the gateway, PostgREST, and a killed server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from devstack.keys import mint_jwt
from devstack.stack import DevStack
from tests.factories import AppUser, create_machine, create_trader, create_user, delete_user
from tests.worker.db.helpers import machine_tables
from worker.clock import LiveClock
from worker.db.client import MachineAuth
from worker.domain.trader import Trader
from worker.errors import ConfigError
from worker.retry import Backoff
from worker.scheduler.trader_sync import TraderSync, TraderSyncSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


class RecordingScheduler:
    """A TraderScheduler that records every call and checks the protocol: once each, in a sane order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, uuid.UUID]] = []
        self.known: dict[uuid.UUID, Trader] = {}
        self.running: set[uuid.UUID] = set()
        self.violations: list[str] = []

    def _record(self, action: str, trader: Trader, *, must_know: bool = True) -> None:
        self.calls.append((action, trader.id))
        if must_know and trader.id not in self.known:
            self.violations.append(f"{action} of unknown {trader.id}")

    async def add(self, trader: Trader) -> None:
        self._record("add", trader, must_know=False)
        if trader.id in self.known:
            self.violations.append(f"add twice {trader.id}")
        self.known[trader.id] = trader
        if trader.is_active:
            self.running.add(trader.id)

    async def update(self, trader: Trader) -> None:
        self._record("update", trader)
        if trader.id not in self.running:
            self.violations.append(f"update of a trader not running {trader.id}")
        self.known[trader.id] = trader

    async def pause(self, trader: Trader) -> None:
        self._record("pause", trader)
        if trader.id not in self.running:
            self.violations.append(f"pause of a trader not running {trader.id}")
        self.running.discard(trader.id)
        self.known[trader.id] = trader

    async def resume(self, trader: Trader) -> None:
        self._record("resume", trader)
        if trader.id in self.running:
            self.violations.append(f"resume of a running trader {trader.id}")
        self.running.add(trader.id)
        self.known[trader.id] = trader

    async def remove(self, trader: Trader) -> None:
        self._record("remove", trader)
        self.known.pop(trader.id, None)
        self.running.discard(trader.id)


async def _wait_until(condition: Callable[[], bool], what: str, timeout_secs: float = 10.0) -> None:
    try:
        async with asyncio.timeout(timeout_secs):
            while not condition():  # noqa: ASYNC110 - the conditions are plain state of the code under test
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_secs}s waiting for {what}") from None


@contextlib.asynccontextmanager
async def _running(sync: TraderSync) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(sync.run(), name="trader-sync-under-test")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def user(db: psycopg.Connection[Any]) -> Iterator[AppUser]:
    app_user = create_user(db)
    create_machine(db, app_user, _machine_id(app_user))
    yield app_user
    delete_user(db, app_user)


def _machine_id(user: AppUser) -> str:
    return f"m-{user.id.hex[:12]}"


@contextlib.asynccontextmanager
async def _sync(
    stack: DevStack,
    user: AppUser,
    scheduler: RecordingScheduler,
    *,
    realtime_url: str | None = None,
    token: str | None = None,
    auth: MachineAuth | None = None,
) -> AsyncIterator[TraderSync]:
    """The sync as the app builds it: the traders table and Realtime as the machine, one MachineAuth."""
    auth = auth or MachineAuth(stack.config.anon_key, token or user.machine_jwt(_machine_id(user)))
    settings = TraderSyncSettings(
        realtime_url=realtime_url or f"{stack.config.api_url}/realtime/v1",
        user_id=user.id,
        reconnect_backoff=Backoff(base_secs=0.1, max_secs=1.0),
    )
    async with machine_tables(auth, user.id) as tables:
        yield TraderSync(settings, tables.traders, auth, scheduler, clock=LiveClock())


def _db_traders(db: psycopg.Connection[Any], user: AppUser) -> dict[uuid.UUID, tuple[str, str, int]]:
    rows = db.execute(
        "select id, name, status::text, signal_code_version from public.traders where user_id = %s",
        (user.id,),
    ).fetchall()
    return {uuid.UUID(str(row[0])): (row[1], row[2], row[3]) for row in rows}


def _view(traders: dict[uuid.UUID, Trader]) -> dict[uuid.UUID, tuple[str, str, int]]:
    return {t.id: (t.name, t.status.value, t.signal_code_version) for t in traders.values()}


async def test_sync_turns_each_change_into_one_scheduler_call(
    stack: DevStack, db: psycopg.Connection[Any], user: AppUser
) -> None:
    existing = create_trader(db, user, "already there")
    scheduler = RecordingScheduler()

    async with _sync(stack, user, scheduler) as sync, _running(sync):
        await _wait_until(lambda: sync.live and existing in sync.traders, "the first reconcile")
        added = create_trader(db, user, "added live")
        await _wait_until(lambda: ("add", added) in scheduler.calls, "the INSERT")
        db.execute("update public.traders set name = 'renamed' where id = %s", (added,))
        await _wait_until(lambda: sync.traders[added].name == "renamed", "the cosmetic UPDATE")
        db.execute(
            "update public.traders set signal_code = signal_code || '#', signal_code_version = 2"
            " where id = %s",
            (added,),
        )
        await _wait_until(lambda: ("update", added) in scheduler.calls, "the code UPDATE")
        db.execute("update public.traders set status = 'paused' where id = %s", (added,))
        await _wait_until(lambda: ("pause", added) in scheduler.calls, "the pause")
        db.execute("update public.traders set status = 'active' where id = %s", (added,))
        await _wait_until(lambda: ("resume", added) in scheduler.calls, "the resume")
        db.execute("delete from public.traders where id = %s", (added,))
        await _wait_until(lambda: added not in sync.traders, "the DELETE")

    assert scheduler.calls == [
        ("add", existing),
        ("add", added),
        ("update", added),
        ("pause", added),
        ("resume", added),
        ("remove", added),
    ]
    assert scheduler.violations == []


async def test_reload_traders_reconciles_and_reports(
    stack: DevStack, db: psycopg.Connection[Any], user: AppUser
) -> None:
    first, second = create_trader(db, user, "one"), create_trader(db, user, "two")
    scheduler = RecordingScheduler()

    async with _sync(stack, user, scheduler) as sync, _running(sync):
        await _wait_until(lambda: sync.live and len(sync.traders) == 2, "the first reconcile")
        report = await asyncio.wait_for(sync.reload_traders(), 10)

    assert (report.traders, report.added, report.removed, report.unreadable) == (2, 0, 0, 0)
    assert set(sync.traders) == {first, second}
    assert sorted(scheduler.calls) == sorted([("add", first), ("add", second)])


async def test_a_wrong_machine_token_stops_the_sync_with_a_config_error(
    stack: DevStack, db: psycopg.Connection[Any], user: AppUser
) -> None:
    forged = user.machine_jwt("m")[:-4] + "AAAA"

    with pytest.raises(ExceptionGroup) as raised:
        async with _sync(stack, user, RecordingScheduler(), token=forged) as sync:
            await asyncio.wait_for(sync.run(), 20)

    assert raised.group_contains(ConfigError)


# A Realtime server of our own, on its own port and slot, that this test may kill.
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start_server(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "devstack.realtime", "--port", str(port)],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "REALTIME_LOG_LEVEL": "WARNING"},
        )


async def _wait_healthy(port: int) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise AssertionError(f"realtime on port {port} never became healthy")


async def _churn(dsn: str, user: AppUser, operations: int, rng: random.Random) -> None:
    """Random inserts, updates (cosmetic, code, status) and deletes of the user's traders."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for step in range(operations):
            rows = await (
                await conn.execute("select id from public.traders where user_id = %s", (user.id,))
            ).fetchall()
            ids = [row[0] for row in rows]
            choice = rng.random()
            if not ids or choice < 0.3:
                await conn.execute(
                    "insert into public.traders (user_id, name, signal_code, ai_instructions, timeframes,"
                    " check_interval, reanalysis_interval) values (%s, %s, 'def check_signal(s, t, k):"
                    " return False', 'x', array['1m'], '1m_close', '5m')",
                    (user.id, f"churn {step}"),
                )
            elif choice < 0.5:
                await conn.execute("delete from public.traders where id = %s", (rng.choice(ids),))
            elif choice < 0.7:
                await conn.execute(
                    "update public.traders set status = case when status = 'active' then 'paused'"
                    "::public.trader_status else 'active' end where id = %s",
                    (rng.choice(ids),),
                )
            elif choice < 0.85:
                await conn.execute(
                    "update public.traders set signal_code = signal_code || '#' where id = %s",
                    (rng.choice(ids),),
                )
            else:
                await conn.execute(
                    "update public.traders set name = %s where id = %s", (f"renamed {step}", rng.choice(ids))
                )
            await asyncio.sleep(0.02)


async def test_killing_the_server_mid_churn_converges_with_nothing_missed_or_duplicated(
    stack: DevStack, db: psycopg.Connection[Any], user: AppUser, tmp_path: Path
) -> None:
    port = _free_port()
    server = _start_server(port, tmp_path / "realtime.log")
    scheduler = RecordingScheduler()
    rng = random.Random(3)
    try:
        await _wait_healthy(port)
        async with (
            _sync(stack, user, scheduler, realtime_url=f"http://127.0.0.1:{port}/socket") as sync,
            _running(sync),
        ):
            await _wait_until(lambda: sync.live, "the first subscription")
            await _churn(stack.config.db_url, user, 40, rng)
            server.send_signal(signal.SIGKILL)  # no goodbye: the socket just dies
            server.wait()
            await _churn(stack.config.db_url, user, 40, rng)  # all of this happens while it is down
            server = _start_server(port, tmp_path / "realtime.log")
            await _wait_healthy(port)
            await _churn(stack.config.db_url, user, 40, rng)
            expected = _db_traders(db, user)
            await _wait_until(lambda: _view(dict(sync.traders)) == expected, "convergence", timeout_secs=20)
            # The scheduler was told everything that changes what runs: every status, and the definition of
            # every running trader (a paused one gets its latest definition when it resumes; renames are not
            # the scheduler's business).
            assert {i: t.status.value for i, t in scheduler.known.items()} == {
                i: status for i, (_, status, _) in expected.items()
            }
            assert {i: t.signal_code_version for i, t in scheduler.known.items() if t.is_active} == {
                i: version for i, (_, status, version) in expected.items() if status == "active"
            }
            assert scheduler.running == {i for i, (_, status, _) in expected.items() if status == "active"}
            assert scheduler.violations == []
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    # The server cleaned its slot up on the way out; the killed one's was taken over on restart.
    slots = db.execute(
        "select slot_name from pg_replication_slots where slot_name = %s", (f"devstack_realtime_{port}",)
    ).fetchall()
    assert slots == []


async def test_a_renewed_token_keeps_the_channel_past_the_old_tokens_expiry(
    stack: DevStack, db: psycopg.Connection[Any], user: AppUser, caplog: pytest.LogCaptureFixture
) -> None:
    # The first token expires in 3 s; Realtime closes a channel whose token expired, unless it was given a
    # new one (access_token), which the sync does when the app's MachineAuth is renewed.
    claims = {"machine_id": _machine_id(user), "machine_gen": 1}
    auth = MachineAuth(
        stack.config.anon_key, mint_jwt("trader_machine", user.id, valid_for_secs=3, extra_claims=claims)
    )

    async with _sync(stack, user, RecordingScheduler(), auth=auth) as sync, _running(sync):
        await _wait_until(lambda: sync.live, "the first subscribe")
        caplog.set_level(logging.INFO, logger="worker.scheduler.trader_sync")
        auth.token = user.machine_jwt(_machine_id(user))  # what TokenRenewer does
        await asyncio.sleep(4)  # past the first token's expiry
        added = create_trader(db, user, "after the first token expired")
        await _wait_until(lambda: added in sync.traders, "the INSERT on the same channel")

    # The session never dropped: no channel error, no reconnect (the old token's expiry closed nothing).
    assert [r.getMessage() for r in caplog.records if "realtime" in r.getMessage()] == []
