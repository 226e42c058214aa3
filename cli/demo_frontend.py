"""What a frontend does for the demo user: sign up, act with the user's JWT through the gateway, read back.

Sign-up goes through Supabase Auth (the stack's stand-in, behind the gateway) with supabase-py's auth client,
and the `on_auth_user_created` trigger makes the `public.users` row exactly as in production. Billing then
sets the tier and subscription with the service_role key through PostgREST, as a
payment webhook (an Edge Function holding the service key) would: users may not raise their own tier.
Everything after that uses only the user's JWT and the anon key, through the gateway.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from devstack.stack import DevStack

FUNCTION_TIMEOUT_SECS = 160.0  # the gateway allows 150 s per function call
PAGE_ROWS = 1000


class FrontendError(Exception):
    """A call a frontend makes failed; the message names the call and the server's own words."""


@dataclass(frozen=True, slots=True)
class DemoUser:
    id: uuid.UUID
    email: str
    jwt: str
    refresh_token: str  # renews the session the dashboard opens on after the demo


def sign_up(stack: DevStack, *, tier: str = "pro") -> DemoUser:
    """Sign a paper-trading user up through Supabase Auth (as an app does); then an active subscription."""
    from supabase import create_client
    from supabase_auth.errors import AuthError

    email = f"demo-{uuid.uuid4().hex[:8]}@trademind.local"
    auth_client = create_client(stack.config.api_url, stack.config.anon_key)
    try:
        session = auth_client.auth.sign_up(
            {"email": email, "password": secrets.token_urlsafe(18) + "7"}
        ).session
    except AuthError as error:
        reason = f"{error.code or 'auth error'} {error.message}"
        raise FrontendError(f"signing the demo user up: {reason}") from None
    finally:
        auth_client.auth.close()
        auth_client.postgrest.aclose()  # sync despite the name: closes its httpx session
    if session is None or session.user is None:
        raise FrontendError("signing the demo user up: Auth answered without a session")
    user_id = uuid.UUID(session.user.id)
    billing = {"tier": tier, "subscription_status": "active", "paper_trading_enabled": True}
    with httpx.Client(base_url=stack.config.api_url, timeout=30.0) as http:
        response = http.patch(
            "/rest/v1/users",
            params={"id": f"eq.{user_id}"},
            json=billing,
            headers={
                "apikey": stack.config.service_role_key,
                "Authorization": f"Bearer {stack.config.service_role_key}",
                "Prefer": "return=representation",
            },
        )
    if response.status_code != 200 or len(response.json()) != 1:
        raise FrontendError(
            f"setting the demo user's subscription: {response.status_code} {response.text[:200]}"
        )
    return DemoUser(user_id, email, session.access_token, session.refresh_token)


class Frontend:
    """The demo user's HTTP calls through the gateway (apikey = anon key, Authorization = the user's JWT)."""

    def __init__(self, api_url: str, anon_key: str, user: DemoUser) -> None:
        self.user = user
        headers = {"apikey": anon_key, "Authorization": f"Bearer {user.jwt}"}
        self._http = httpx.Client(base_url=api_url, headers=headers, timeout=30.0)

    def close(self) -> None:
        self._http.close()

    def call(self, function: str, body: dict[str, Any], timeout_secs: float = FUNCTION_TIMEOUT_SECS) -> Any:
        """POST an Edge Function; a non-2xx answer raises with the function's {error: {code, message}}."""
        try:
            response = self._http.post(f"/functions/v1/{function}", json=body, timeout=timeout_secs)
        except httpx.TransportError as error:
            raise FrontendError(f"{function}: the gateway did not answer ({type(error).__name__})") from error
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code >= 400:
            problem = payload.get("error") if isinstance(payload, dict) else None
            message = problem.get("message") if isinstance(problem, dict) else response.text[:200]
            raise FrontendError(f"{function} answered {response.status_code}: {message}")
        return payload

    def update_trader(self, trader_id: str, changes: dict[str, Any]) -> None:
        """Change the user's own trader (RLS: only theirs), as the app's settings screen does."""
        response = self._http.patch(
            "/rest/v1/traders", params={"id": f"eq.{trader_id}"}, json=changes,
            headers={"Prefer": "return=representation"},
        )  # fmt: skip
        if response.status_code != 200 or len(response.json()) != 1:
            raise FrontendError(f"updating trader {trader_id}: {response.status_code} {response.text[:200]}")

    def rows(self, table: str, select: str = "*", order: str | None = None) -> list[dict[str, Any]]:
        """Every row of `table` the user may read (RLS), page by page."""
        rows: list[dict[str, Any]] = []
        params = {"select": select, **({"order": order} if order else {})}
        while True:
            headers = {"Range-Unit": "items", "Range": f"{len(rows)}-{len(rows) + PAGE_ROWS - 1}"}
            response = self._http.get(f"/rest/v1/{table}", params=params, headers=headers)
            if response.status_code not in (200, 206):
                raise FrontendError(f"reading {table}: {response.status_code} {response.text[:200]}")
            # numeric columns arrive as JSON numbers: read them as Decimal, exactly as Postgres holds them.
            page = json.loads(response.text, parse_float=Decimal)
            rows += page
            if len(page) < PAGE_ROWS:
                return rows
