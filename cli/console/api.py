"""The signed-in trader's requests through the gateway: PostgREST as the user (RLS decides what they see), the
Edge Functions, and the session kept fresh. Every failure becomes one ConsoleError naming the problem.
"""

from __future__ import annotations

import json
import re
import threading
from decimal import Decimal
from typing import Any

import httpx

from cli.console import auth
from cli.console.errors import ConsoleError
from cli.console.session import REFRESH_MARGIN_SECS, Endpoint, Profile, Session

_REFRESH_LOCK = threading.Lock()
FUNCTION_TIMEOUT_SECS = 160.0  # the gateway allows 150 s per function call
EXPIRED_CODES = ("PGRST301", "PGRST303")  # PostgREST: JWT invalid / expired

# What a refused CHECK constraint means, the database holds the rule; this names the field.
_CONSTRAINTS = {
    "traders_name_length": "name must be 1-100 characters",
    "traders_description_length": "description must be at most 4,000 characters",
    "traders_timeframes_valid": "timeframes must be 1-8 of 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d",
    "traders_check_interval_valid": (
        "interval must be one of 1s 5s 10s 15s 30s 1m 3m 5m 15m 30m 1h 2h 4h 6h 12h 1d, or <timeframe>_close"
    ),
    "traders_reanalysis_interval_valid": "reanalysis interval must be a fixed interval or <timeframe>_close",
    "traders_symbols_valid": "symbols must be 1-500 distinct Binance symbols such as BTCUSDT",
    "traders_risk_valid": (
        "risk limits: max position size must be above 0 USD, max open positions a whole number "
        "from 1 to 100, "
        "daily loss limit 0 USD or more"
    ),
}
_CONSTRAINT_NAME = re.compile(r'constraint "([a-z0-9_]+)"')


def _problem(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of a PostgREST or function error body."""
    try:
        body = response.json()
    except json.JSONDecodeError:
        return "", response.text[:200] or f"HTTP {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):  # an Edge Function's {error: {...}}
        return str(body["error"].get("code", "")), str(body["error"].get("message", ""))
    if isinstance(body, dict):
        return str(body.get("code", "")), str(body.get("message") or body.get("msg") or body)
    return "", str(body)[:200]


class Api:
    """One CLI invocation's connection to the project, acting as the profile's signed-in user."""

    def __init__(self, profile: Profile, *, timeout_secs: float = 30.0) -> None:
        self.profile = profile
        self.endpoint: Endpoint = profile.endpoint()
        session = profile.session()
        if session is None:
            raise ConsoleError(
                f"not signed in (profile {profile.name}): run trademind login or trademind signup"
            )
        self._session = session
        self._http = httpx.Client(base_url=self.endpoint.url, timeout=timeout_secs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # Session ------------------------------------------------------------------------------------------------
    @property
    def user_id(self) -> str:
        return self._session.user_id

    @property
    def session(self) -> Session:
        return self._session

    def access_token(self) -> str:
        """The access token, refreshed (and the profile updated) when it is about to expire."""
        if not self._session.expires_within(REFRESH_MARGIN_SECS):
            return self._session.access_token
        # One refresh at a time (the dashboard calls from several threads): a refresh token works once.
        with _REFRESH_LOCK:
            self._session = self.profile.session() or self._session
            if self._session.expires_within(REFRESH_MARGIN_SECS):
                if self._session.refresh_token:
                    self._session = auth.refresh(self.endpoint, self._session)
                    self.profile.save_session(self._session)
                elif self._session.expires_within(0):
                    raise ConsoleError("your session expired: run trademind login")
        return self._session.access_token

    def headers(self) -> dict[str, str]:
        return {"apikey": self.endpoint.anon_key, "Authorization": f"Bearer {self.access_token()}"}

    # Requests -----------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, what: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers(), **kwargs.pop("headers", {})}
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as error:
            raise ConsoleError(
                f"cannot reach {self.endpoint.url} ({type(error).__name__}): is the project up? "
                "(locally: trademind dev up)"
            ) from error
        if response.status_code >= 400:
            raise self.error_for(response, what)
        return response

    def error_for(self, response: httpx.Response, what: str) -> ConsoleError:
        """The one-line error for a refused request."""
        code, message = _problem(response)
        if response.status_code == 401 or code in EXPIRED_CODES:
            return ConsoleError(f"{what}: your session is no longer valid ({message}): run trademind login")
        if code == "23514":
            match = _CONSTRAINT_NAME.search(message)
            rule = _CONSTRAINTS.get(match.group(1)) if match else None
            if rule:
                return ConsoleError(f"{what}: refused by the database: {rule}")
        return ConsoleError(f"{what}: {message}")

    def rows(self, table: str, params: dict[str, str], *, what: str, offset: int = 0,
             limit: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
        headers = {}
        if limit is not None:
            headers = {"Range-Unit": "items", "Range": f"{offset}-{offset + limit - 1}"}
        response = self.request("GET", f"/rest/v1/{table}", params=params, headers=headers, what=what)
        # numeric columns arrive as JSON numbers: read them as Decimal, exactly as Postgres holds them.
        rows = json.loads(response.text, parse_float=Decimal)
        return rows if isinstance(rows, list) else []

    def one(self, table: str, params: dict[str, str], *, what: str) -> dict[str, Any] | None:
        rows = self.rows(table, params, what=what, limit=1)
        return rows[0] if rows else None

    def write(self, method: str, table: str, *, what: str, params: dict[str, str] | None = None,
              body: Any = None) -> list[dict[str, Any]]:  # fmt: skip
        response = self.request(
            method, f"/rest/v1/{table}", params=params or {}, json=body, what=what,
            headers={"Prefer": "return=representation"},
        )  # fmt: skip
        rows = json.loads(response.text or "[]", parse_float=Decimal)
        return rows if isinstance(rows, list) else []

    def rpc(self, name: str, body: dict[str, Any], *, what: str) -> Any:
        response = self.request("POST", f"/rest/v1/rpc/{name}", json=body, what=what)
        return json.loads(response.text, parse_float=Decimal) if response.text else None

    def call(self, function: str, body: dict[str, Any], *, what: str,
             timeout_secs: float = FUNCTION_TIMEOUT_SECS) -> dict[str, Any]:  # fmt: skip
        response = self.request(
            "POST", f"/functions/v1/{function}", json=body, timeout=timeout_secs, what=what
        )
        payload = response.json()
        return payload if isinstance(payload, dict) else {"result": payload}
