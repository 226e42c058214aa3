"""Broken traders reach the database: report_trader_error via PostgREST as the machine, on the local stack."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from devstack.stack import DevStack
from tests.factories import AppUser, create_trader, create_user, delete_user
from tests.worker.sandbox.conftest import btc_windows
from tests.worker.sandbox.hostile import body
from worker.errors import ConfigError, WorkerError
from worker.sandbox import (
    KlineSnapshot,
    PostgrestTraderErrorReporter,
    SandboxConfig,
    SandboxPool,
    SignalCodeError,
    SignalRunner,
    SignalRuntimeError,
)

MACHINE_ID = "m-sandbox-tests"


@pytest.fixture
def user(db: psycopg.Connection[Any]) -> Iterator[AppUser]:
    created = create_user(db)
    yield created
    delete_user(db, created)


@pytest_asyncio.fixture(loop_scope="function")
async def reporter(stack: DevStack, user: AppUser) -> AsyncIterator[PostgrestTraderErrorReporter]:
    adapter = PostgrestTraderErrorReporter(
        f"{stack.config.api_url}/rest/v1", stack.config.anon_key, user.machine_jwt(MACHINE_ID)
    )
    yield adapter
    await adapter.aclose()


def trader_state(db: psycopg.Connection[Any], trader_id: uuid.UUID | str) -> tuple[str, str | None]:
    row = db.execute("select status::text, error_message from public.traders where id = %s", (trader_id,))
    found = row.fetchone()
    assert found is not None
    return found[0], found[1]


async def test_reporter_sets_the_trader_to_error(
    reporter: PostgrestTraderErrorReporter, db: psycopg.Connection[Any], user: AppUser
) -> None:
    trader_id = create_trader(db, user)

    await reporter.report_trader_error(str(trader_id), "signal code stopped: it looped")

    assert trader_state(db, trader_id) == ("error", "signal code stopped: it looped")


async def test_reporter_cannot_touch_another_users_trader(
    reporter: PostgrestTraderErrorReporter, db: psycopg.Connection[Any]
) -> None:
    someone_else = create_user(db)
    try:
        their_trader = create_trader(db, someone_else)

        with pytest.raises(WorkerError, match="P0002") as refused:
            await reporter.report_trader_error(str(their_trader), "nope")

        assert not isinstance(refused.value, ConfigError)
        assert trader_state(db, their_trader) == ("active", None)
    finally:
        delete_user(db, someone_else)


async def test_reporter_with_a_user_token_is_refused(
    stack: DevStack, db: psycopg.Connection[Any], user: AppUser
) -> None:
    trader_id = create_trader(db, user)
    adapter = PostgrestTraderErrorReporter(f"{stack.config.api_url}/rest/v1", stack.config.anon_key, user.jwt)
    try:
        with pytest.raises(ConfigError, match="refused"):
            await adapter.report_trader_error(str(trader_id), "a user may not do this")
    finally:
        await adapter.aclose()

    assert trader_state(db, trader_id) == ("active", None)


async def test_rejected_and_runaway_code_marks_only_those_traders(
    reporter: PostgrestTraderErrorReporter, db: psycopg.Connection[Any], user: AppUser
) -> None:
    rejected, runaway, healthy = (
        create_trader(db, user, name) for name in ("rejected", "runaway", "healthy")
    )
    klines = btc_windows(3)

    async with SandboxPool(SandboxConfig(processes=2, default_deadline_ms=100)) as pool:
        runner = SignalRunner(pool, reporter)
        with pytest.raises(SignalCodeError):
            await runner.load(str(rejected), 1, body("import os", "return False"))
        looping = await runner.load(str(runaway), 1, body("while True:", "    pass"))
        fine = await runner.load(str(healthy), 1, body("return True"))
        with KlineSnapshot(klines) as snapshot:
            with pytest.raises(SignalRuntimeError):
                await runner.evaluate(looping, list(klines), snapshot)
            result = await runner.evaluate(fine, list(klines), snapshot)

    assert trader_state(db, rejected) == (
        "error",
        "signal code rejected: line 2: imports are not allowed: math is already available; numpy is not "
        "importable in signal code (there is no np): the kline fields are numpy arrays already, so use their "
        "methods (closes[-20:].mean(), .std(), .max(), .argmax()) or the helpers",
    )
    assert trader_state(db, runaway) == (
        "error",
        f"signal code stopped: check_signal ran longer than the 100 ms deadline (stopped while checking "
        f"{next(iter(klines))})",
    )
    assert trader_state(db, healthy) == ("active", None)
    assert result.matches == list(klines)
