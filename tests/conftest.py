"""Session fixtures: the real local stack (started if needed, stopped again only if we started it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from devstack.stack import DevStack


@pytest.fixture(scope="session")
def stack() -> Iterator[DevStack]:
    dev_stack = DevStack()
    # Stop it afterwards only if nothing was running before: a stack someone else started stays up.
    was_running = any(part.running for part in dev_stack.status())
    dev_stack.up()
    yield dev_stack
    if not was_running:
        dev_stack.down()


@pytest.fixture
def db(stack: DevStack) -> Iterator[psycopg.Connection[Any]]:
    """A superuser connection in autocommit mode (the API under test sees what it writes)."""
    with stack.postgres.connect(autocommit=True) as conn:
        yield conn
