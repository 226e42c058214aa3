"""The database gateway as a worker holds it, for tests: every table family, as one machine token's user."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

from devstack.keys import ANON_KEY
from worker.clock import LiveClock
from worker.db import Tables
from worker.db.client import Database, MachineAuth

REST_URL = "http://127.0.0.1:54321/rest/v1"


@contextlib.asynccontextmanager
async def machine_tables(token: str | MachineAuth, user_id: uuid.UUID) -> AsyncIterator[Tables]:
    """The local stack's tables through PostgREST with `token` (closed when the block ends)."""
    clock = LiveClock()
    auth = token if isinstance(token, MachineAuth) else MachineAuth(ANON_KEY, token)
    database = Database(REST_URL, auth, clock=clock)
    try:
        yield Tables.on(database, user_id)
    finally:
        await database.aclose()
