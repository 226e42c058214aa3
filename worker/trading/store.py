"""Trading state in Postgres through PostgREST, as the user's trader_machine: the transition RPCs and reads.

Every write is one of the migration's transition functions (one transaction each, idempotent on ids the
worker generated), so a retry after a timeout is always safe. JSON numbers are parsed as Decimal.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx

from worker.clock import Clock, LiveClock
from worker.database import machine_headers
from worker.domain.enums import OrderStatus, SignalStatus
from worker.errors import ConfigError, InvariantViolation, TransientError, WorkerError
from worker.retry import Backoff, retry

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECS = 10.0
STORE_BACKOFF = Backoff(base_secs=0.2, max_secs=5.0)


class StaleState(InvariantViolation):
    """The database refused a transition because the row changed under us (reload before acting again)."""


class InsufficientPaperBalance(WorkerError):
    """A paper fill would take the virtual balance below zero."""


@dataclass(frozen=True, slots=True)
class FillResult:
    applied: bool  # False: this order's fill was already recorded (a retry)
    position: dict[str, Any] | None
    paper_balance: Decimal | None


class TradingStore:
    """The executor's PostgREST client (one httpx client; close with `aclose`)."""

    def __init__(
        self,
        rest_url: str,
        anon_key: str,
        machine_token: str,
        *,
        clock: Clock | None = None,
        attempts: int = 5,
        backoff: Backoff = STORE_BACKOFF,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=rest_url, headers=machine_headers(anon_key, machine_token), timeout=REQUEST_TIMEOUT_SECS
        )
        self._clock = clock or LiveClock()
        self._attempts = attempts
        self._backoff = backoff

    async def aclose(self) -> None:
        await self._http.aclose()

    # Transitions --------------------------------------------------------------------------------------
    async def paper_balance(self) -> Decimal:
        return Decimal(str(await self._rpc("trading_paper_balance", {})))

    async def record_order(self, trade: dict[str, Any]) -> dict[str, Any]:
        """Record an order before sending it; returns the row (an earlier one if the id was recorded)."""
        result: dict[str, Any] = await self._rpc("trading_record_order", {"trade": trade})
        return result

    async def mark_order(
        self,
        client_order_id: str,
        status: OrderStatus,
        *,
        binance_order_id: int | None = None,
        error_message: str | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._rpc(
            "trading_mark_order",
            {
                "client_order_id": client_order_id,
                "status": status.value,
                "binance_order_id": binance_order_id,
                "error_message": error_message,
            },
        )
        return result

    async def apply_fill(self, fill: dict[str, Any]) -> FillResult:
        result = await self._rpc("trading_apply_fill", {"fill": fill})
        balance = result.get("paper_balance")
        return FillResult(
            bool(result["applied"]),
            result.get("position"),
            Decimal(str(balance)) if balance is not None else None,
        )

    async def update_position(self, position_id: uuid.UUID, changes: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._rpc(
            "trading_update_position", {"position_id": str(position_id), "changes": changes}
        )
        return result

    async def set_signal(
        self,
        signal_id: uuid.UUID,
        *,
        status: SignalStatus | None = None,
        close_reason: str | None = None,
        refusal: str | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._rpc(
            "trading_set_signal",
            {
                "signal_id": str(signal_id),
                "status": status.value if status is not None else None,
                "close_reason": close_reason,
                "refusal": refusal,
            },
        )
        return result

    # Reads ------------------------------------------------------------------------------------------
    async def user_row(self) -> dict[str, Any]:
        rows = await self._get("users", {"select": "id,real_trading_enabled,paper_starting_balance_usd"})
        if not rows:
            raise ConfigError("the machine token's user has no users row")
        row: dict[str, Any] = rows[0]
        return row

    async def open_positions(self) -> list[dict[str, Any]]:
        return await self._get(
            "positions",
            {"select": "*,signals!inner(trader_id)", "status": "eq.open", "order": "opened_at"},
        )

    async def signal(self, signal_id: uuid.UUID) -> dict[str, Any] | None:
        rows = await self._get("signals", {"select": "*", "id": f"eq.{signal_id}"})
        return rows[0] if rows else None

    async def watching_signals(self, trader_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
        params = {"select": "*", "status": "eq.watching", "order": "created_at"}
        if trader_id is not None:
            params["trader_id"] = f"eq.{trader_id}"
        return await self._get("signals", params)

    async def signals_in(self, status: SignalStatus) -> list[dict[str, Any]]:
        return await self._get("signals", {"select": "*", "status": f"eq.{status.value}"})

    async def pending_trades(self) -> list[dict[str, Any]]:
        return await self._get("trades", {"select": "*", "status": "eq.pending", "order": "executed_at"})

    async def closed_positions_since(self, since: datetime) -> list[dict[str, Any]]:
        return await self._get(
            "positions",
            {
                "select": "id,symbol,closed_at,signals!inner(trader_id)",
                "status": "eq.closed",
                "closed_at": f"gte.{since.isoformat()}",
            },
        )

    async def realized_since(self, since: datetime) -> list[dict[str, Any]]:
        """Fills that realised PnL since `since` with their fee and trader (the daily loss limit's input)."""
        return await self._get(
            "trades",
            {
                "select": "realized_pnl,fee,fee_asset,price,signals!inner(trader_id)",
                "status": "eq.filled",
                "realized_pnl": "not.is.null",
                "executed_at": f"gte.{since.isoformat()}",
            },
        )

    async def order(self, client_order_id: str) -> dict[str, Any] | None:
        rows = await self._get("trades", {"select": "*", "client_order_id": f"eq.{client_order_id}"})
        return rows[0] if rows else None

    async def trades_of(self, position_id: uuid.UUID) -> list[dict[str, Any]]:
        return await self._get(
            "trades", {"select": "*", "position_id": f"eq.{position_id}", "order": "executed_at"}
        )

    # Plumbing ---------------------------------------------------------------------------------------
    async def _rpc(self, name: str, body: dict[str, Any]) -> Any:
        async def call() -> Any:
            return await self._request("POST", f"/rpc/{name}", json_body=body, what=f"{name}()")

        return await retry(call, what=f"{name}()", attempts=self._attempts, backoff=self._backoff,
                           clock=self._clock)  # fmt: skip

    async def _get(self, table: str, params: dict[str, str]) -> list[dict[str, Any]]:
        async def call() -> Any:
            return await self._request("GET", f"/{table}", params=params, what=f"read {table}")

        rows = await retry(call, what=f"read {table}", attempts=self._attempts, backoff=self._backoff,
                           clock=self._clock)  # fmt: skip
        return list(rows)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json_body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        try:
            response = await self._http.request(method, path, json=json_body, params=params)
        except httpx.TransportError as error:
            raise TransientError(f"{what}: {type(error).__name__}") from error
        if response.status_code < 300:
            return json.loads(response.content, parse_float=Decimal) if response.content else None
        try:
            problem = response.json()
        except ValueError:
            problem = {"message": response.text[:200]}
        code = str(problem.get("code"))
        message = f"{what}: HTTP {response.status_code} {code}: {problem.get('message')}"
        if response.status_code >= 500 or response.status_code == 429 or code.startswith(("08", "53", "57")):
            raise TransientError(message)
        if code == "PT409":
            raise StaleState(message)
        if code == "PT402":
            raise InsufficientPaperBalance(message)
        if response.status_code in (401, 403) or code in {"42501", "PGRST301", "PGRST302"}:
            raise ConfigError(f"{message} (the machine token was refused)")
        raise WorkerError(message)
