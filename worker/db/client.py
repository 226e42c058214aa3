"""The worker's one HTTP client to PostgREST, and the one mapping of PostgREST's answers to WorkerError.

Every call goes out as the user's trader_machine (the project's anon key plus the machine's JWT), so row
level security applies to all of it. JSON numbers are parsed as Decimal. An answer is judged by its error
code first (PostgREST answers most database errors with HTTP 500, whether retrying helps or not):

    HTTP 429, or a 5xx with Retry-After                    RateLimited      (retried, waiting as asked)
    HTTP 401/403, SQLSTATE 42501, PGRST301/302             ConfigError      (the machine token was refused)
    PT409 (a transition found the row changed)             StaleState
    PT402 (a paper fill would overdraw)                    InsufficientPaperBalance
    SQLSTATE 08/53/57, PGRST0xx (no database), a 5xx
    without a code (a gateway), a transport failure        TransientError   (retried here)
    anything else                                          Refused          (status and code kept)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Generator, Mapping
from decimal import Decimal
from typing import Any, Final, TypeVar

import httpx

from worker.clock import Clock
from worker.errors import ConfigError, InvariantViolation, RateLimited, TransientError, WorkerError
from worker.retry import Backoff, retry, retry_after_secs
from worker.tls import client_tls

logger = logging.getLogger(__name__)

T = TypeVar("T")

REQUEST_TIMEOUT_SECS: Final = 10.0
# Every table family retries transient failures alike unless a caller retries on its own (attempts=1).
ATTEMPTS: Final = 5
BACKOFF: Final = Backoff(base_secs=0.2, max_secs=5.0)
# PostgREST's and Postgres's answers to a JWT that is invalid, expired, or of a role without the grant.
TOKEN_REFUSED_CODES: Final = frozenset({"42501", "PGRST301", "PGRST302"})
# Connection, resources, operator intervention; PostgREST's own "cannot reach the database" codes.
_TRANSIENT_CODES: Final = ("08", "53", "57", "PGRST0")


class StaleState(InvariantViolation):
    """The database refused a transition because the row changed under us (reload before acting again)."""


class InsufficientPaperBalance(WorkerError):
    """A paper fill would take the virtual balance below zero."""


class Refused(WorkerError):
    """PostgREST refused the request for a reason retrying will not change (a constraint, a missing row)."""

    def __init__(self, message: str, *, status: int, code: str | None, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.detail = detail


class MachineAuth(httpx.Auth):
    """The anon key and the machine's JWT, put on every request to Supabase (PostgREST, Edge Functions)."""

    def __init__(self, anon_key: str, token: str) -> None:
        self.anon_key = anon_key
        self.token = token

    def headers(self) -> dict[str, str]:
        return {"apikey": self.anon_key, "Authorization": f"Bearer {self.token}"}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(self.headers())
        yield request


def refusal(what: str, response: httpx.Response) -> WorkerError:
    """The worker's error for a PostgREST answer that is not a success."""
    problem = _problem(response)
    status = response.status_code
    code = str(problem["code"]) if problem.get("code") is not None else None
    detail = str(problem.get("message", ""))
    message = f"{what}: HTTP {status} {code}: {detail}"
    retry_after = retry_after_secs(response.headers.get("retry-after"))
    if status == 429 or (status >= 500 and retry_after is not None):
        return RateLimited(message, retry_after)
    if status in (401, 403) or code in TOKEN_REFUSED_CODES:
        return ConfigError(f"{message} (the machine token was refused)")
    if code == "PT409":
        return StaleState(message)
    if code == "PT402":
        return InsufficientPaperBalance(message)
    if (code or "").startswith(_TRANSIENT_CODES) or (status >= 500 and code is None):
        return TransientError(message)
    return Refused(message, status=status, code=code, detail=detail)


class Database:
    """PostgREST at `rest_url` as the machine: one httpx client for every table (close with `aclose`)."""

    def __init__(
        self,
        rest_url: str,
        auth: MachineAuth,
        *,
        clock: Clock,
        timeout_secs: float = REQUEST_TIMEOUT_SECS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=rest_url,
            auth=auth,
            timeout=timeout_secs,
            transport=transport,
            verify=client_tls(rest_url),
        )
        self._clock = clock

    async def aclose(self) -> None:
        await self._http.aclose()

    async def rpc(
        self, name: str, body: Mapping[str, Any], *, what: str | None = None, attempts: int = ATTEMPTS
    ) -> Any:
        """Call `public.<name>(...)` (one transaction); its JSON result."""
        what = what or f"{name}()"

        async def call() -> Any:
            return _json(await self._send("POST", f"/rpc/{name}", what, json_body=body))

        return await self._retrying(call, what, attempts)

    async def select(
        self, table: str, params: Mapping[str, str], *, what: str, attempts: int = ATTEMPTS
    ) -> list[dict[str, Any]]:
        """The rows PostgREST returns for `GET /<table>?<params>`."""

        async def call() -> list[dict[str, Any]]:
            rows = _json(await self._send("GET", f"/{table}", what, params=params))
            if not isinstance(rows, list):
                raise TransientError(f"{what}: PostgREST did not return a list")
            return rows

        return await self._retrying(call, what, attempts)

    async def count(self, table: str, filters: Mapping[str, str], *, what: str) -> int:
        """How many rows of `table` match `filters` (PostgREST's exact count)."""

        async def call() -> int:
            params = {"select": "id", "limit": "1", **filters}
            response = await self._send("GET", f"/{table}", what, params=params, prefer="count=exact")
            total = response.headers.get("content-range", "").rpartition("/")[2]
            if not total.isdigit():
                raise TransientError(f"{what}: PostgREST sent no count")
            return int(total)

        return await self._retrying(call, what, ATTEMPTS)

    async def insert(self, table: str, row: Mapping[str, Any], *, what: str) -> None:
        """`POST /<table>` one row (a retry after a lost answer may find it there: Refused 409)."""

        async def call() -> None:
            await self._send("POST", f"/{table}", what, json_body=row, prefer="return=minimal")

        await self._retrying(call, what, ATTEMPTS)

    async def update(
        self, table: str, filters: Mapping[str, str], changes: Mapping[str, Any], *, what: str
    ) -> list[dict[str, Any]]:
        """`PATCH /<table>?<filters>`; the rows it changed (as `filters`' `select` names them)."""

        async def call() -> list[dict[str, Any]]:
            response = await self._send(
                "PATCH", f"/{table}", what, params=filters, json_body=changes, prefer="return=representation"
            )
            rows = _json(response)
            return rows if isinstance(rows, list) else []

        return await self._retrying(call, what, ATTEMPTS)

    async def _retrying(self, call: Callable[[], Awaitable[T]], what: str, attempts: int) -> T:
        return await retry(call, what=what, attempts=attempts, backoff=BACKOFF, clock=self._clock)

    async def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        prefer: str | None = None,
    ) -> httpx.Response:
        headers = {"Prefer": prefer} if prefer else None
        try:
            response = await self._http.request(method, path, params=params, json=json_body, headers=headers)
        except httpx.TransportError as error:
            raise TransientError(f"{what}: {type(error).__name__}") from error
        if response.status_code >= 300:
            raise refusal(what, response)
        return response


def _json(response: httpx.Response) -> Any:
    return json.loads(response.content, parse_float=Decimal) if response.content else None


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"message": response.text[:200]}
    return body if isinstance(body, dict) else {"message": str(body)[:200]}
