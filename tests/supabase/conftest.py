"""Two signed-up users with a trader each, removed after the test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.factories import AppUser, create_trader, create_user, delete_user


def _user_with_trader(db: psycopg.Connection[Any], trader_name: str) -> Iterator[AppUser]:
    user = create_user(db)
    create_trader(db, user, trader_name)
    yield user
    delete_user(db, user)


@pytest.fixture
def alice(db: psycopg.Connection[Any]) -> Iterator[AppUser]:
    yield from _user_with_trader(db, "alice's trader")


@pytest.fixture
def bob(db: psycopg.Connection[Any]) -> Iterator[AppUser]:
    yield from _user_with_trader(db, "bob's trader")
