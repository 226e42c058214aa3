"""Two signed-up users with a trader each, removed after the test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.factories import AppUser, create_trader, create_user, delete_user


@pytest.fixture
def alice(db: psycopg.Connection[Any]) -> Iterator[AppUser]:
    user = create_user(db)
    create_trader(db, user, "alice's trader")
    yield user
    delete_user(db, user)


@pytest.fixture
def bob(db: psycopg.Connection[Any]) -> Iterator[AppUser]:
    user = create_user(db)
    create_trader(db, user, "bob's trader")
    yield user
    delete_user(db, user)
