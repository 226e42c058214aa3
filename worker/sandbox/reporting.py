"""Telling Supabase a trader's code is broken: `public.report_trader_error` through PostgREST.

The RPC (trader_machine only) sets the trader to `status='error'` with the message, for the owner to see;
the trader sync then stops scheduling it. The runner calls the reporter once per broken code version.
"""

from __future__ import annotations

from typing import Protocol

import httpx
from postgrest.exceptions import APIError

from worker.database import machine_postgrest
from worker.errors import ConfigError, TransientError, WorkerError
from worker.retry import retry

REQUEST_TIMEOUT_SECS = 10.0
MAX_MESSAGE_CHARS = 2000  # the RPC keeps this many characters


class TraderErrorReporter(Protocol):
    async def report_trader_error(self, trader_id: str, message: str) -> None:
        """Mark the trader as failed with a message its owner can act on."""
        ...


class PostgrestTraderErrorReporter:
    """The reporter the worker uses: the RPC, called as the machine (apikey + trader_machine JWT)."""

    def __init__(self, rest_url: str, anon_key: str, machine_token: str) -> None:
        self._client = machine_postgrest(rest_url, anon_key, machine_token, REQUEST_TIMEOUT_SECS)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def report_trader_error(self, trader_id: str, message: str) -> None:
        """Set the trader to `status='error'` (retrying transient failures).

        Raises:
            ConfigError: the machine token was refused.
            WorkerError: the trader does not exist or is not this user's (P0002), or another refusal.
        """
        payload = {"trader_id": trader_id, "error_message": message[:MAX_MESSAGE_CHARS]}

        async def call() -> None:
            try:
                await self._client.rpc("report_trader_error", payload).execute()
            except httpx.TransportError as error:
                raise TransientError(f"report_trader_error({trader_id}): {type(error).__name__}") from error
            except APIError as error:
                what = f"report_trader_error({trader_id}): {error.code}: {error.message}"
                if error.code in {"42501", "PGRST301", "PGRST302"}:
                    raise ConfigError(f"{what} (the machine token was refused)") from error
                if error.code is None or str(error.code).startswith(("08", "53", "57")):
                    raise TransientError(what) from error
                raise WorkerError(what) from error

        await retry(call, what=f"report_trader_error trader_id={trader_id}", attempts=4)
