"""The traders table as the machine: report_trader_error marks only this user's traders, only for machines."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from devstack.stack import DevStack
from tests.factories import AppUser, create_trader, create_user, delete_user, trader_state
from tests.worker.db.helpers import machine_tables
from worker.db.traders import TraderRows
from worker.errors import ConfigError, WorkerError


async def test_reporter_sets_the_trader_to_error(
    reporter: TraderRows, db: psycopg.Connection[Any], user: AppUser
) -> None:
    trader_id = create_trader(db, user)

    await reporter.report_trader_error(str(trader_id), "signal code stopped: it looped")

    assert trader_state(db, trader_id) == ("error", "signal code stopped: it looped")


async def test_reporter_cannot_touch_another_users_trader(
    reporter: TraderRows, db: psycopg.Connection[Any]
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
    async with machine_tables(user.jwt, user.id) as tables:
        with pytest.raises(ConfigError, match="refused"):
            await tables.traders.report_trader_error(str(trader_id), "a user may not do this")

    assert trader_state(db, trader_id) == ("active", None)
