"""Fixtures the worker's tests share: a user with a live machine (whose token the worker acts with)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.factories import MachineUser, create_machine, create_user, delete_user


@pytest.fixture
def machine(db: psycopg.Connection[Any]) -> Iterator[MachineUser]:
    user = create_user(db)
    yield MachineUser(user, create_machine(db, user))
    delete_user(db, user)
