"""Renewal of the machine's trader_machine JWT at machine-token, before it expires.

A machine token lives an hour at most. The worker's one `MachineAuth` (client.py) puts the current token on
every request (PostgREST, Edge Functions; the trader sync hands it to its Realtime channel with set_auth), and
`TokenRenewer` exchanges the machine credential for a new one at `functions/v1/machine-token` when three
quarters of the token's life have passed. A 401 there means the machine was destroyed or replaced: that is a
ConfigError (the worker stops with exit 78 and is not restarted).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any, Final

import httpx

from worker.clock import Clock
from worker.components import ComponentState
from worker.db.client import MachineAuth
from worker.errors import ConfigError, RateLimited, TransientError
from worker.retry import Backoff, retry, retry_after_secs
from worker.tls import client_tls

logger = logging.getLogger(__name__)

RENEW_AT_FRACTION: Final = 0.75  # of the token's lifetime
REQUEST_TIMEOUT_SECS: Final = 10.0
_BACKOFF: Final = Backoff(base_secs=1.0, max_secs=30.0)


def token_lifetime_secs(token: str) -> tuple[float, float]:
    """(iat, exp) of a JWT, read without verifying it (the worker only needs to know when to renew)."""
    try:
        payload = token.split(".")[1]
        claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = float(claims["exp"])
        return float(claims.get("iat", exp - 3600)), exp
    except (IndexError, KeyError, TypeError, ValueError) as error:
        raise ConfigError("MACHINE_TOKEN is not a JWT with an exp claim") from error


class TokenRenewer:
    """Renew the machine token in `auth` before it expires, as long as the machine is live."""

    name = "machine-token"

    def __init__(
        self,
        auth: MachineAuth,
        *,
        functions_url: str,
        machine_id: str,
        credential: str,
        clock: Clock,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._auth = auth
        self._url = f"{functions_url.rstrip('/')}/machine-token"
        self._machine_id = machine_id
        self._credential = credential
        self._clock = clock
        self._transport = transport
        self._state = ComponentState.STARTING
        self.renewals = 0

    def state(self) -> ComponentState:
        return self._state

    def renew_due_secs(self) -> float:
        """Seconds (wall clock) until the current token should be renewed; 0 when it is due."""
        issued, expires = token_lifetime_secs(self._auth.token)
        return max(0.0, issued + (expires - issued) * RENEW_AT_FRACTION - time.time())

    async def run(self) -> None:
        self._state = ComponentState.RUNNING
        while True:
            await self._clock.sleep(self.renew_due_secs())
            try:
                await retry(self.renew, what="machine token renewal", backoff=_BACKOFF, clock=self._clock)
            except ConfigError:
                self._state = ComponentState.FAILED
                raise
            except (TransientError, RateLimited) as error:
                # Still short of expiry (a quarter of its life was left): keep trying until it is renewed.
                self._state = ComponentState.DEGRADED
                logger.warning(
                    "machine token renewal failed, retrying machine_id=%s error=%s", self._machine_id, error
                )
                await self._clock.sleep(_BACKOFF.max_secs)

    async def renew(self) -> str:
        """Exchange the machine credential for a new token; it replaces the one in `auth`."""
        headers = {"apikey": self._auth.anon_key, "Authorization": f"Bearer {self._credential}"}
        try:
            async with httpx.AsyncClient(
                timeout=REQUEST_TIMEOUT_SECS, transport=self._transport, verify=client_tls(self._url)
            ) as http:
                response = await http.post(self._url, json={"machineId": self._machine_id}, headers=headers)
        except httpx.TransportError as error:
            raise TransientError(f"machine-token: {type(error).__name__}") from error
        if response.status_code == 401:
            raise ConfigError(
                f"machine-token refused the machine credential (HTTP 401 {_error_code(response)}): "
                "the machine was destroyed or replaced"
            )
        if response.status_code == 429:
            raise RateLimited(
                "machine-token: HTTP 429", retry_after_secs(response.headers.get("retry-after"))
            )
        if response.status_code != 200:
            raise TransientError(f"machine-token: HTTP {response.status_code} {_error_code(response)}")
        token = response.json().get("token")
        if not isinstance(token, str):
            raise TransientError("machine-token: the answer holds no token")
        token_lifetime_secs(token)  # a token we could not schedule the next renewal of is no token
        self._auth.token = token
        self.renewals += 1
        self._state = ComponentState.RUNNING
        logger.info("machine token renewed machine_id=%s renewals=%d", self._machine_id, self.renewals)
        return token

    async def prepare_shutdown(self) -> None:
        return None


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "-"
