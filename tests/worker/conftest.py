"""Fixtures the worker's tests share: a user, a user with a live machine (whose token the worker acts with),
and the traders table as a machine of the user (the sandbox's reporter)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from devstack.stack import DevStack
from tests.factories import AppUser, MachineUser, create_machine, create_user, delete_user
from tests.worker.db.helpers import machine_tables
from worker.db.traders import TraderRows


@pytest.fixture
def machine(db: psycopg.Connection[Any]) -> Iterator[MachineUser]:
    user = create_user(db)
    yield MachineUser(user, create_machine(db, user))
    delete_user(db, user)


@pytest.fixture
def user(db: psycopg.Connection[Any]) -> Iterator[AppUser]:
    created = create_user(db)
    yield created
    delete_user(db, created)


@pytest_asyncio.fixture(loop_scope="function")
async def reporter(stack: DevStack, db: psycopg.Connection[Any], user: AppUser) -> AsyncIterator[TraderRows]:
    async with machine_tables(user.machine_jwt(create_machine(db, user)), user.id) as tables:
        yield tables.traders
