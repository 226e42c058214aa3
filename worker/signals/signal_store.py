"""The `signals` table through PostgREST, as the user's trader_machine (RLS applies to every call).

Every row is created with an id the worker generated, so a retried insert is recognised rather than
duplicated. The unique index `signals_one_live_per_trader_symbol` refuses a second live signal for a trader
and symbol: that answer means "already live", not an error. Closing is conditional on the status still
being `new`, so the worker never closes a signal the executor has moved on.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

import httpx

from worker.clock import Clock, LiveClock
from worker.database import machine_headers
from worker.domain.enums import SignalStatus
from worker.errors import ConfigError, RateLimited, TransientError, WorkerError
from worker.retry import retry

logger = logging.getLogger(__name__)

LIVE_INDEX: Final = "signals_one_live_per_trader_symbol"
MAX_CLOSE_REASON_CHARS: Final = 500  # signals_close_reason_length
_UNIQUE_VIOLATION: Final = "23505"


class InsertOutcome(StrEnum):
    CREATED = "created"
    ALREADY_LIVE = "already_live"


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class SignalStore:
    """Insert, query and close signals; transient failures are retried, refusals raise."""

    def __init__(
        self,
        rest_url: str,
        anon_key: str,
        machine_token: str,
        user_id: uuid.UUID,
        *,
        timeout_secs: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=rest_url, headers=machine_headers(anon_key, machine_token), timeout=timeout_secs
        )
        self._user_id = user_id
        self._clock = clock or LiveClock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def insert(
        self, signal_id: uuid.UUID, trader_id: uuid.UUID, symbol: str, trigger_price: Decimal
    ) -> InsertOutcome:
        """Create the signal (`status='new'`), or report that the trader already has a live one for `symbol`.

        Raises:
            WorkerError: the database refused the row for another reason (the message says which).
        """
        row = {
            "id": str(signal_id),
            "trader_id": str(trader_id),
            "user_id": str(self._user_id),
            "symbol": symbol,
            "status": SignalStatus.NEW.value,
            "trigger_price": str(trigger_price),
        }
        what = f"insert signal id={signal_id} trader_id={trader_id} symbol={symbol}"

        async def call() -> InsertOutcome:
            response = await self._send("POST", "/signals", what, json=row, prefer="return=minimal")
            if response.status_code == 201:
                return InsertOutcome.CREATED
            error = _error_body(response)
            if response.status_code == 409 and error.get("code") == _UNIQUE_VIOLATION:
                if LIVE_INDEX in str(error.get("message", "")):
                    return InsertOutcome.ALREADY_LIVE
                if await self._exists(signal_id, trader_id, symbol):
                    return InsertOutcome.CREATED  # our own earlier attempt reached the database
            raise _refused(what, response)

        return await retry(call, what=what, attempts=4, clock=self._clock)

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
        rows = await self._get_rows(params, f"live signals trader_id={trader_id}")
        return {str(row["symbol"]) for row in rows}

    async def recent(self, trader_id: uuid.UUID, since: datetime) -> dict[str, datetime]:
        """The newest signal time per symbol for signals of the trader created at or after `since`."""
        params = {
            "select": "symbol,created_at",
            "trader_id": f"eq.{trader_id}",
            "created_at": f"gte.{_rfc3339(since)}",
            "order": "created_at.asc",
        }
        rows = await self._get_rows(params, f"recent signals trader_id={trader_id}")
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
        rows = await self._get_rows(params, "stranded signals")
        return [uuid.UUID(str(row["id"])) for row in rows]

    async def close_if_new(self, signal_id: uuid.UUID, reason: str) -> bool:
        """Close the signal with `reason` if it is still `new`; True if this call closed it."""
        body = {
            "status": SignalStatus.CLOSED.value,
            "closed_at": _rfc3339(self._clock.now()),
            "close_reason": reason[:MAX_CLOSE_REASON_CHARS],
        }
        params = {"id": f"eq.{signal_id}", "status": f"eq.{SignalStatus.NEW.value}", "select": "id"}
        what = f"close signal id={signal_id}"

        async def call() -> bool:
            response = await self._send(
                "PATCH", "/signals", what, json=body, params=params, prefer="return=representation"
            )
            if response.status_code != 200:
                raise _refused(what, response)
            return bool(response.json())

        return await retry(call, what=what, attempts=4, clock=self._clock)

    async def _exists(self, signal_id: uuid.UUID, trader_id: uuid.UUID, symbol: str) -> bool:
        params = {"select": "trader_id,symbol", "id": f"eq.{signal_id}"}
        rows = await self._get_rows(params, f"signal id={signal_id}")
        return any(row["trader_id"] == str(trader_id) and row["symbol"] == symbol for row in rows)

    async def _get_rows(self, params: dict[str, str], what: str) -> list[dict[str, Any]]:
        async def call() -> list[dict[str, Any]]:
            response = await self._send("GET", "/signals", what, params=params)
            if response.status_code != 200:
                raise _refused(what, response)
            rows = response.json()
            if not isinstance(rows, list):
                raise TransientError(f"{what}: PostgREST did not return a list")
            return rows

        return await retry(call, what=what, attempts=4, clock=self._clock)

    async def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        prefer: str | None = None,
    ) -> httpx.Response:
        headers = {"Prefer": prefer} if prefer else {}
        try:
            response = await self._http.request(method, path, json=json, params=params, headers=headers)
        except httpx.TransportError as error:
            raise TransientError(f"{what}: {type(error).__name__}") from error
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = response.headers.get("retry-after")
            raise RateLimited(
                f"{what}: HTTP {response.status_code}",
                float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        return response


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _refused(what: str, response: httpx.Response) -> WorkerError:
    error = _error_body(response)
    code, message = error.get("code"), str(error.get("message", response.text[:200]))
    if response.status_code in (401, 403) or code in {"42501", "PGRST301", "PGRST302"}:
        return ConfigError(f"{what}: the machine token was refused (HTTP {response.status_code} {code})")
    return WorkerError(f"{what}: HTTP {response.status_code} {code}: {message}")
