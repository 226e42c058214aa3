"""Sign-up, sign-in, refresh and sign-out with Supabase Auth through the gateway (supabase-py's auth client).

The client keeps nothing itself (no persisted session, no background refresh): the profile file holds the
session, and `Api` refreshes it when it is about to expire.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from supabase_auth import SyncGoTrueClient
from supabase_auth.errors import AuthError, AuthRetryableError

from cli.console.errors import ConsoleError
from cli.console.session import Endpoint, Session

# Supabase Auth's error codes, in the words a trader needs.
_MESSAGES = {
    "invalid_credentials": "wrong email or password",
    "user_already_exists": "an account with this email exists already: use trademind login",
    "email_exists": "an account with this email exists already: use trademind login",
    "weak_password": "the password is too weak",
    "refresh_token_not_found": "your session has ended (signed out or expired): run trademind login",
    "refresh_token_already_used": "your session has ended (signed out or expired): run trademind login",
    "session_not_found": "your session has ended (signed out or expired): run trademind login",
    "over_request_rate_limit": "too many sign-in attempts: wait a minute and try again",
    "email_not_confirmed": "the email address is not confirmed yet: follow the link in the email",
    "validation_failed": "the email or password is not valid",
}


@contextmanager
def _auth_client(endpoint: Endpoint, access_token: str | None = None) -> Iterator[SyncGoTrueClient]:
    headers = {"apikey": endpoint.anon_key}
    if access_token:
        headers["Authorization"] = f"Bearer {access_token}"
    client = SyncGoTrueClient(
        url=f"{endpoint.url}/auth/v1", headers=headers, auto_refresh_token=False, persist_session=False
    )
    try:
        yield client
    except AuthRetryableError as error:
        raise ConsoleError(f"cannot reach Supabase Auth at {endpoint.url}: {error.message}") from error
    except AuthError as error:
        known = _MESSAGES.get(str(error.code))
        if known and error.code == "weak_password":
            known = f"{known}: {error.message}"
        raise ConsoleError(known or f"Supabase Auth refused: {error.message}") from error
    finally:
        client.close()


def _session(response: Any) -> Session:
    session = response.session
    if session is None:
        raise ConsoleError("signed up; confirm your email address, then run trademind login")
    return Session(
        access_token=session.access_token,
        refresh_token=session.refresh_token,
        expires_at=int(session.expires_at or 0),
        user_id=str(session.user.id),
        email=session.user.email,
    )


def sign_up(endpoint: Endpoint, email: str, password: str) -> Session:
    with _auth_client(endpoint) as client:
        return _session(client.sign_up({"email": email, "password": password}))


def sign_in(endpoint: Endpoint, email: str, password: str) -> Session:
    with _auth_client(endpoint) as client:
        return _session(client.sign_in_with_password({"email": email, "password": password}))


def refresh(endpoint: Endpoint, session: Session) -> Session:
    if not session.refresh_token:
        raise ConsoleError("your session expired and cannot be renewed: run trademind login")
    with _auth_client(endpoint) as client:
        return _session(client.refresh_session(session.refresh_token))


def sign_out(endpoint: Endpoint, session: Session) -> None:
    """Revoke the session's refresh tokens on the server (this device's session only)."""
    with _auth_client(endpoint, session.access_token) as client:
        client.admin.sign_out(session.access_token, "local")
