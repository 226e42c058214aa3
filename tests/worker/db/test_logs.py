"""The machine's log lines through record_machine_logs(): a retried batch counts once, the user reads them,
and a destroyed machine's token ships nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from devstack.keys import ANON_KEY
from devstack.stack import DevStack
from tests.factories import create_user, delete_user
from tests.worker.db.helpers import machine_tables
from worker.domain.enums import LogLevel
from worker.domain.logs import LogLine
from worker.errors import ConfigError


def line(message: str, level: LogLevel = LogLevel.INFO) -> LogLine:
    return LogLine(uuid.uuid4(), datetime.now(UTC), level, "worker.test", message)


async def test_a_retried_batch_is_recorded_once_and_the_user_reads_it(
    stack: DevStack, db: psycopg.Connection[Any]
) -> None:
    user = create_user(db)
    try:
        db.execute(
            "insert into fly_machines (user_id, machine_id, status) values (%s, 'm-logs', 'running')",
            (user.id,),
        )
        batch = [line("worker started"), line("order refused", LogLevel.ERROR), line("x" * 5000)]
        async with machine_tables(user.machine_jwt("m-logs"), user.id) as tables:
            first = await tables.logs.record(batch)
            again = await tables.logs.record(batch)
        async with httpx.AsyncClient() as http:
            answer = await http.get(
                f"{stack.config.api_url}/rest/v1/machine_logs",
                params={"select": "id,level,message,machine_id", "order": "logged_at"},
                headers={"apikey": ANON_KEY, "Authorization": f"Bearer {user.jwt}"},
            )
        rows = answer.json()
    finally:
        delete_user(db, user)

    assert (first, again) == (3, 0)
    assert [row["id"] for row in rows] == [str(item.id) for item in batch]
    assert [row["level"] for row in rows] == ["INFO", "ERROR", "INFO"]
    assert {row["machine_id"] for row in rows} == {"m-logs"} and len(rows[2]["message"]) == 4000


async def test_a_destroyed_machines_token_ships_nothing(db: psycopg.Connection[Any]) -> None:
    user = create_user(db)
    try:
        db.execute(
            "insert into fly_machines (user_id, machine_id, status, destroyed_at)"
            " values (%s, 'm-gone', 'destroyed', now())",
            (user.id,),
        )
        async with machine_tables(user.machine_jwt("m-gone"), user.id) as tables:
            with pytest.raises(ConfigError):
                await tables.logs.record([line("from beyond")])
    finally:
        delete_user(db, user)
