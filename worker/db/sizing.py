"""Ask scale-machines to size this machine now: POST {} as the machine, which names only its own machine; the
function decides the size from the load /metrics reports, within the tier and the cooldown."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Final

import httpx

from worker.db.client import MachineAuth
from worker.errors import TransientError
from worker.tls import client_tls

logger = logging.getLogger(__name__)

# The function reads this machine's /metrics (5 s at most) and, when it resizes, answers before it starts.
REQUEST_TIMEOUT_SECS: Final = 30.0


class SizingAnswer(StrEnum):
    RESIZING = "resizing"  # a resize of this machine is under way: it restarts the machine
    UNCHANGED = "unchanged"  # the machine carries the load, or is at its tier's bound
    COOLDOWN = "cooldown"  # resized too recently to resize again
    UNREACHABLE = "unreachable"  # the function could not read /metrics
    RATE_LIMITED = "rate_limited"  # asked too recently to be evaluated again


class SizingRequests:
    """Calls scale-machines as the machine (apikey + trader_machine JWT)."""

    def __init__(
        self, functions_url: str, auth: MachineAuth, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._url = f"{functions_url.rstrip('/')}/scale-machines"
        self._http = httpx.AsyncClient(
            auth=auth, timeout=REQUEST_TIMEOUT_SECS, transport=transport, verify=client_tls(self._url)
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def ask(self) -> SizingAnswer:
        """What the function made of this machine's load.

        Raises:
            TransientError: no answer, or one this worker does not understand.
        """
        try:
            response = await self._http.post(self._url, json={})
        except httpx.TransportError as error:
            raise TransientError(f"scale-machines: {type(error).__name__}") from error
        if response.status_code == 429:
            return SizingAnswer.RATE_LIMITED
        try:
            status = response.json()["machine"]["status"] if response.status_code in (200, 202) else "-"
            return SizingAnswer(str(status))
        except (ValueError, KeyError, TypeError):
            detail = response.text[:200]
            raise TransientError(f"scale-machines: HTTP {response.status_code} {detail}") from None
