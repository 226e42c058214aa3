"""The worker's access to Supabase through PostgREST, as its user's trader_machine (RLS applies)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
from postgrest import AsyncPostgrestClient
from postgrest.exceptions import APIError
from postgrest.types import CountMethod

from worker.domain.enums import MachineStatus, PositionStatus, SignalStatus, TraderStatus
from worker.errors import ConfigError, TransientError, WorkerError

logger = logging.getLogger(__name__)

# The schema versions this build of the worker understands (public.schema_version()).
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})
REQUEST_TIMEOUT_SECS = 10.0


@dataclass(frozen=True, slots=True)
class RecoveredState:
    """What the worker finds in the database when it starts."""

    active_traders: int
    open_positions: int
    watching_signals: int


def check_schema_version(version: int) -> None:
    """Raises ConfigError unless this worker was built for `version`."""
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        supported = ", ".join(str(v) for v in sorted(SUPPORTED_SCHEMA_VERSIONS))
        raise ConfigError(
            f"database schema version {version} is not supported by this worker (supports {supported})"
        )


def machine_headers(anon_key: str, machine_token: str) -> dict[str, str]:
    """What every call to Supabase carries: the project's anon key, and the machine's JWT (so RLS applies)."""
    return {"apikey": anon_key, "Authorization": f"Bearer {machine_token}"}


def machine_postgrest(
    rest_url: str, anon_key: str, machine_token: str, timeout_secs: float = REQUEST_TIMEOUT_SECS
) -> AsyncPostgrestClient:
    """A postgrest-py client acting as the machine, with our timeout on its own HTTP session."""
    headers = machine_headers(anon_key, machine_token)
    session = httpx.AsyncClient(base_url=rest_url, headers=headers, timeout=timeout_secs)
    return AsyncPostgrestClient(rest_url, headers=headers, http_client=session)


class MachineDatabase:
    """PostgREST calls the app itself makes (components get their own narrower clients)."""

    def __init__(self, rest_url: str, anon_key: str, machine_token: str) -> None:
        self._client = machine_postgrest(rest_url, anon_key, machine_token)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def schema_version(self) -> int:
        response = await self._call(self._client.rpc("schema_version", {}).execute(), "schema_version()")
        return int(response.data)

    async def record_heartbeat(self, status: MachineStatus, version: str) -> MachineStatus:
        """Refresh this machine's row (database clock); returns the status now recorded.

        Raises:
            ConfigError: the token's machine has no row (it was destroyed, or the token is someone else's).
        """
        request = self._client.rpc("record_machine_heartbeat", {"status": status.value, "version": version})
        try:
            response = await self._call(request.execute(), "record_machine_heartbeat()")
        except WorkerError as error:
            if isinstance(error.__cause__, APIError) and error.__cause__.code == "P0002":
                raise ConfigError(str(error)) from error.__cause__
            raise
        return MachineStatus(response.data["status"])

    async def recover_state(self) -> RecoveredState:
        traders = await self._call(
            self._client.from_("traders")
            .select("id", count=CountMethod.exact)
            .eq("status", TraderStatus.ACTIVE)
            .limit(1)
            .execute(),
            "count traders",
        )
        positions = await self._call(
            self._client.from_("positions")
            .select("id", count=CountMethod.exact)
            .eq("status", PositionStatus.OPEN)
            .limit(1)
            .execute(),
            "count open positions",
        )
        signals = await self._call(
            self._client.from_("signals")
            .select("id", count=CountMethod.exact)
            .eq("status", SignalStatus.WATCHING)
            .limit(1)
            .execute(),
            "count watching signals",
        )
        return RecoveredState(traders.count or 0, positions.count or 0, signals.count or 0)

    async def open_positions(self) -> list[dict[str, Any]]:
        response = await self._call(
            self._client.from_("positions")
            .select(
                "id, signal_id, symbol, side, type, entry_price, size, stop_loss, take_profit, "
                "trailing_stop_percent, realized_pnl, opened_at"
            )
            .eq("status", PositionStatus.OPEN)
            .order("opened_at")
            .execute(),
            "list open positions",
        )
        return list(response.data)

    async def _call(self, request: Any, what: str) -> Any:
        """Await a postgrest request, converting failures into the worker's error tree."""
        try:
            return await request
        except httpx.TransportError as error:
            raise TransientError(f"{what}: {type(error).__name__}") from error
        except APIError as error:
            if error.code in {"42501", "PGRST301", "PGRST302"}:
                raise ConfigError(
                    f"{what}: the machine token was refused ({error.code}: {error.message})"
                ) from error
            if str(error.code).startswith(("08", "53", "57")) or error.code is None:
                raise TransientError(f"{what}: {error.code}: {error.message}") from error
            raise WorkerError(f"{what}: {error.code}: {error.message}") from error
