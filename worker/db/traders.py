"""The `traders` table for this user: the whole set (for the trader sync), and reporting broken code."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Final

from worker.db.client import Database
from worker.domain.enums import TraderStatus
from worker.domain.trader import Trader, TraderRowError

logger = logging.getLogger(__name__)

_PAGE_ROWS: Final = 1000  # PostgREST's max_rows
MAX_ERROR_MESSAGE_CHARS: Final = 2000  # report_trader_error keeps this many characters
_REPORT_ATTEMPTS: Final = 4


@dataclass(frozen=True, slots=True)
class TraderListing:
    """Every trader row of the user: parsed, and the ids of rows the worker cannot use (logged)."""

    traders: dict[uuid.UUID, Trader]
    unreadable: frozenset[str]


class TraderRows:
    """Reads the user's traders and marks one as broken (`report_trader_error`, trader_machine only)."""

    def __init__(self, db: Database, user_id: uuid.UUID) -> None:
        self._db = db
        self._user_id = user_id

    async def listing(self) -> TraderListing:
        """Every trader of the user, a page at a time; one attempt (the trader sync retries on its own)."""
        rows: list[dict[str, object]] = []
        while True:
            params = {
                "select": "*",
                "user_id": f"eq.{self._user_id}",
                "order": "id.asc",
                "limit": str(_PAGE_ROWS),
                "offset": str(len(rows)),
            }
            page = await self._db.select("traders", params, what="GET /traders", attempts=1)
            rows += page
            if len(page) < _PAGE_ROWS:
                break
        traders: dict[uuid.UUID, Trader] = {}
        unreadable: set[str] = set()
        for row in rows:
            try:
                trader = Trader.from_row(row)
            except TraderRowError as error:
                logger.error("%s", error)
                unreadable.add(str(row.get("id")))
                continue
            traders[trader.id] = trader
        return TraderListing(traders, frozenset(unreadable))

    async def count_active(self) -> int:
        filters = {"status": f"eq.{TraderStatus.ACTIVE.value}"}
        return await self._db.count("traders", filters, what="count traders")

    async def report_trader_error(self, trader_id: str, message: str) -> None:
        """Set the trader to `status='error'` with `message` for its owner (the sandbox's reporter).

        Raises:
            ConfigError: the machine token was refused.
            WorkerError: the trader does not exist or is not this user's (P0002), or another refusal.
        """
        body = {"trader_id": trader_id, "error_message": message[:MAX_ERROR_MESSAGE_CHARS]}
        what = f"report_trader_error trader_id={trader_id}"
        await self._db.rpc("report_trader_error", body, what=what, attempts=_REPORT_ATTEMPTS)
