"""The `signals` table: the engine creates and closes signals, trading moves them through their lifecycle.

The machine writes signals only through the transition functions. `trading_create_signal` creates a signal
with an id the worker generated, so a retried insert is recognised rather than duplicated, and answers
"already live" when the trader has a live signal for the symbol (`signals_one_live_per_trader_symbol`).
`close_if_new` is conditional on the status still being `new`, so the engine never closes a signal trading
has moved on; every move goes through `trading_set_signal`, which refuses an illegal one (StaleState).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final, Protocol

from worker.db.client import Database
from worker.domain.enums import SignalStatus
from worker.domain.signal import Signal

MAX_CLOSE_REASON_CHARS: Final = 500  # signals_close_reason_length


class InsertOutcome(StrEnum):
    CREATED = "created"
    ALREADY_LIVE = "already_live"


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _signal(row: dict[str, Any]) -> Signal:
    return Signal(
        id=uuid.UUID(str(row["id"])),
        trader_id=uuid.UUID(str(row["trader_id"])),
        symbol=str(row["symbol"]),
        trigger_price=Decimal(str(row["trigger_price"])),
        status=SignalStatus(row["status"]),
    )


class SignalStore(Protocol):
    """What the engine and trading need of the `signals` table (SignalRows; a backtest's memory store)."""

    async def insert(
        self, signal_id: uuid.UUID, trader_id: uuid.UUID, symbol: str, trigger_price: Decimal
    ) -> InsertOutcome: ...

    async def live_symbols(self, trader_id: uuid.UUID, symbols: Iterable[str]) -> set[str]: ...

    async def recent(self, trader_id: uuid.UUID, since: datetime) -> dict[str, datetime]: ...

    async def new_before(self, cutoff: datetime) -> list[uuid.UUID]: ...

    async def close_if_new(self, signal_id: uuid.UUID, reason: str) -> bool: ...

    async def status(self, signal_id: uuid.UUID) -> SignalStatus | None: ...

    async def set_state(
        self,
        signal_id: uuid.UUID,
        *,
        status: SignalStatus | None = None,
        close_reason: str | None = None,
        refusal: str | None = None,
    ) -> None: ...

    async def watching(self, trader_id: uuid.UUID) -> list[Signal]: ...

    async def ids_with(self, status: SignalStatus) -> list[uuid.UUID]: ...

    async def count(self, status: SignalStatus) -> int: ...


class SignalRows:
    """This user's signals: insert, query, close, and the lifecycle transitions."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # The engine ------------------------------------------------------------------------------------
    async def insert(
        self, signal_id: uuid.UUID, trader_id: uuid.UUID, symbol: str, trigger_price: Decimal
    ) -> InsertOutcome:
        """Create the signal (`status='new'`), or report that the trader already has a live one for `symbol`.

        Raises:
            WorkerError: the database refused the signal (no such trader of this user, an invalid value).
        """
        body = {
            "signal_id": str(signal_id),
            "trader_id": str(trader_id),
            "symbol": symbol,
            "trigger_price": str(trigger_price),
        }
        what = f"create signal id={signal_id} trader_id={trader_id} symbol={symbol}"
        return InsertOutcome(await self._db.rpc("trading_create_signal", body, what=what))

    async def live_symbols(self, trader_id: uuid.UUID, symbols: Iterable[str]) -> set[str]:
        """The symbols among `symbols` with a live (not closed) signal of this trader."""
        wanted = sorted(set(symbols))
        if not wanted:
            return set()
        params = {
            "select": "symbol",
            "trader_id": f"eq.{trader_id}",
            "status": f"neq.{SignalStatus.CLOSED.value}",
            "symbol": f"in.({','.join(wanted)})",
        }
        rows = await self._db.select("signals", params, what=f"live signals trader_id={trader_id}")
        return {str(row["symbol"]) for row in rows}

    async def recent(self, trader_id: uuid.UUID, since: datetime) -> dict[str, datetime]:
        """The newest signal time per symbol for signals of the trader created at or after `since`."""
        params = {
            "select": "symbol,created_at",
            "trader_id": f"eq.{trader_id}",
            "created_at": f"gte.{_rfc3339(since)}",
            "order": "created_at.asc",
        }
        rows = await self._db.select("signals", params, what=f"recent signals trader_id={trader_id}")
        return {str(row["symbol"]): datetime.fromisoformat(str(row["created_at"])) for row in rows}

    async def new_before(self, cutoff: datetime) -> list[uuid.UUID]:
        """Ids of this user's signals still `new` that were created before `cutoff`."""
        params = {
            "select": "id",
            "status": f"eq.{SignalStatus.NEW.value}",
            "created_at": f"lt.{_rfc3339(cutoff)}",
            "order": "created_at.asc",
            "limit": "1000",
        }
        rows = await self._db.select("signals", params, what="stranded signals")
        return [uuid.UUID(str(row["id"])) for row in rows]

    async def close_if_new(self, signal_id: uuid.UUID, reason: str) -> bool:
        """Close the signal with `reason` if it is still `new`; True if this call closed it."""
        body = {
            "signal_id": str(signal_id),
            "status": SignalStatus.CLOSED.value,
            "close_reason": reason[:MAX_CLOSE_REASON_CHARS],
            "expected_status": SignalStatus.NEW.value,
        }
        row = await self._db.rpc("trading_set_signal", body, what=f"close signal id={signal_id}")
        return bool(row["changed"])

    # Trading ---------------------------------------------------------------------------------------
    async def status(self, signal_id: uuid.UUID) -> SignalStatus | None:
        """The signal's status (None: no such signal for this user)."""
        rows = await self._db.select(
            "signals", {"select": "status", "id": f"eq.{signal_id}"}, what=f"signal id={signal_id}"
        )
        return SignalStatus(rows[0]["status"]) if rows else None

    async def set_state(
        self,
        signal_id: uuid.UUID,
        *,
        status: SignalStatus | None = None,
        close_reason: str | None = None,
        refusal: str | None = None,
    ) -> None:
        """Move the signal (`trading_set_signal`), record why it closed, or note a refused decision.

        Raises:
            StaleState: the move is not allowed from the signal's current status.
        """
        await self._db.rpc(
            "trading_set_signal",
            {
                "signal_id": str(signal_id),
                "status": status.value if status is not None else None,
                "close_reason": close_reason,
                "refusal": refusal,
            },
        )

    async def watching(self, trader_id: uuid.UUID) -> list[Signal]:
        """The trader's watching signals, oldest first."""
        params = {
            "select": "*",
            "status": f"eq.{SignalStatus.WATCHING.value}",
            "trader_id": f"eq.{trader_id}",
            "order": "created_at",
        }
        return [_signal(row) for row in await self._db.select("signals", params, what="watching signals")]

    async def ids_with(self, status: SignalStatus) -> list[uuid.UUID]:
        params = {"select": "id", "status": f"eq.{status.value}"}
        rows = await self._db.select("signals", params, what=f"{status.value} signals")
        return [uuid.UUID(str(row["id"])) for row in rows]

    async def count(self, status: SignalStatus) -> int:
        filters = {"status": f"eq.{status.value}"}
        return await self._db.count("signals", filters, what=f"count {status.value} signals")
