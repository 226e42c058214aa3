"""The Auth stand-in through the gateway, driven by supabase-py's own auth client: sign-up and sign-in give
ES256 sessions PostgREST and Realtime accept, refresh tokens rotate and a reused one revokes its session,
GoTrue's error codes, sign-out, user updates, the public JWKS, and the sign-in rate limit."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from realtime import AsyncRealtimeClient, RealtimeSubscribeStates
from supabase import Client, create_client
from supabase_auth.errors import AuthApiError, AuthWeakPasswordError

from devstack.keys import ANON_KEY
from devstack.stack import DevStack

PASSWORD = "correct-horse-7"


@pytest.fixture
def new_client(stack: DevStack) -> Iterator[Callable[[], Client]]:
    """supabase-py clients on the anon key, as an app makes them; their HTTP sessions closed afterwards."""
    clients: list[Client] = []

    def make() -> Client:
        clients.append(create_client(stack.config.api_url, ANON_KEY))
        return clients[-1]

    yield make
    for made in clients:
        made.auth.close()
        made.postgrest.aclose()  # sync despite the name: closes its httpx session


@pytest.fixture
def client(new_client: Callable[[], Client]) -> Client:
    return new_client()


@pytest.fixture
def email(db: psycopg.Connection[Any]) -> Iterator[str]:
    address = f"auth-{uuid.uuid4().hex[:12]}@example.com"
    yield address
    db.execute("delete from auth.users where email = %s", (address,))


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def test_sign_up_gives_an_es256_session_with_supabase_claims_and_a_public_users_row(
    client: Client, email: str, stack: DevStack, db: psycopg.Connection[Any]
) -> None:
    response = client.auth.sign_up({"email": email, "password": PASSWORD, "options": {"data": {"plan": "x"}}})

    assert response.session is not None and response.user is not None
    header = jwt.get_unverified_header(response.session.access_token)
    assert header["alg"] == "ES256" and header["kid"]
    claims = claims_of(response.session.access_token)
    assert claims["iss"] == f"{stack.config.api_url}/auth/v1"
    assert (claims["aud"], claims["role"], claims["aal"]) == ("authenticated", "authenticated", "aal1")
    assert (claims["sub"], claims["email"]) == (response.user.id, email)
    assert claims["exp"] - claims["iat"] == 3600 and claims["session_id"]
    assert claims["user_metadata"]["plan"] == "x"
    assert claims["amr"][0]["method"] == "password"
    # The sign-up trigger made the public row, which the session reads through PostgREST's JWKS check.
    rows = client.table("users").select("id, email").execute().data
    assert rows == [{"id": response.user.id, "email": email}]
    stored = db.execute("select encrypted_password from auth.users where email = %s", (email,)).fetchone()
    assert stored is not None and stored[0].startswith("$2") and PASSWORD not in stored[0]


def test_the_jwks_is_public_and_verifies_the_session(client: Client, email: str, stack: DevStack) -> None:
    session = client.auth.sign_up({"email": email, "password": PASSWORD}).session
    assert session is not None

    jwks = httpx.get(f"{stack.config.api_url}/auth/v1/.well-known/jwks.json").json()

    assert all("d" not in key for key in jwks["keys"])
    kid = jwt.get_unverified_header(session.access_token)["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    verified = jwt.decode(session.access_token, key.key, algorithms=["ES256"], audience="authenticated")
    assert verified["email"] == email
    assert client.auth.get_claims() is not None  # supabase-py's own JWKS check


def test_sign_in_and_the_error_codes_clients_branch_on(client: Client, email: str) -> None:
    client.auth.sign_up({"email": email, "password": PASSWORD})

    signed_in = client.auth.sign_in_with_password({"email": email.upper(), "password": PASSWORD})
    assert signed_in.user is not None and signed_in.user.email == email

    cases: list[tuple[dict[str, Any], str, int]] = [
        ({"email": email, "password": "wrong-horse-7"}, "invalid_credentials", 400),
        ({"email": f"nobody-{email}", "password": PASSWORD}, "invalid_credentials", 400),
    ]
    for credentials, code, status in cases:
        with pytest.raises(AuthApiError) as refused:
            client.auth.sign_in_with_password(credentials)  # type: ignore[arg-type]
        assert (refused.value.code, refused.value.status) == (code, status)
    with pytest.raises(AuthApiError) as taken:
        client.auth.sign_up({"email": email, "password": PASSWORD})
    assert (taken.value.code, taken.value.status) == ("user_already_exists", 422)
    with pytest.raises(AuthApiError) as invalid:
        client.auth.sign_up({"email": "not-an-email", "password": PASSWORD})
    assert invalid.value.code == "email_address_invalid"


@pytest.mark.parametrize(("password", "reason"), [("short1", "length"), ("no-digits-here", "characters")])
def test_weak_passwords_are_refused_with_their_reasons(
    client: Client, email: str, password: str, reason: str
) -> None:
    with pytest.raises(AuthWeakPasswordError) as weak:
        client.auth.sign_up({"email": email, "password": password})

    assert (weak.value.code, weak.value.status, weak.value.reasons) == ("weak_password", 422, [reason])


def test_refresh_tokens_rotate_and_a_reused_one_revokes_the_session(client: Client, email: str) -> None:
    first = client.auth.sign_up({"email": email, "password": PASSWORD}).session
    assert first is not None

    second = client.auth.refresh_session(first.refresh_token).session
    assert second is not None and second.refresh_token != first.refresh_token
    # Within the reuse interval the first token answers with its child (a client retrying a lost reply).
    again = client.auth.refresh_session(first.refresh_token).session
    assert again is not None and again.refresh_token == second.refresh_token
    third = client.auth.refresh_session(second.refresh_token).session
    assert third is not None

    # The first token's child is spent too: replaying it is theft, and the whole session goes.
    with pytest.raises(AuthApiError) as reused:
        client.auth.refresh_session(first.refresh_token)
    assert reused.value.code == "refresh_token_already_used"
    with pytest.raises(AuthApiError) as revoked:
        client.auth.refresh_session(third.refresh_token)
    assert revoked.value.code == "refresh_token_not_found"
    with pytest.raises(AuthApiError) as gone:
        client.auth.get_user(third.access_token)
    assert (gone.value.code, gone.value.status) == ("session_not_found", 403)


def test_sign_out_ends_the_session(client: Client, email: str) -> None:
    session = client.auth.sign_up({"email": email, "password": PASSWORD}).session
    assert session is not None

    client.auth.sign_out()

    with pytest.raises(AuthApiError) as refresh:
        client.auth.refresh_session(session.refresh_token)
    assert refresh.value.code == "refresh_token_not_found"
    with pytest.raises(AuthApiError) as user:
        client.auth.get_user(session.access_token)
    assert user.value.code == "session_not_found"


def test_update_user_merges_metadata_and_a_new_password_ends_other_sessions(
    new_client: Callable[[], Client], client: Client, email: str
) -> None:
    client.auth.sign_up({"email": email, "password": PASSWORD, "options": {"data": {"a": 1, "b": 2}}})
    other = new_client()
    other_session = other.auth.sign_in_with_password({"email": email, "password": PASSWORD}).session
    assert other_session is not None

    updated = client.auth.update_user({"data": {"a": None, "c": 3}})
    assert updated.user is not None
    assert {k: updated.user.user_metadata.get(k) for k in ("a", "b", "c")} == {"a": None, "b": 2, "c": 3}
    with pytest.raises(AuthApiError) as same:
        client.auth.update_user({"password": PASSWORD})
    assert same.value.code == "same_password"
    client.auth.update_user({"password": "battery-staple-9"})

    assert client.auth.get_user() is not None  # this session stays
    with pytest.raises(AuthApiError) as ended:
        other.auth.refresh_session(other_session.refresh_token)
    assert ended.value.code == "refresh_token_not_found"
    assert other.auth.sign_in_with_password({"email": email, "password": "battery-staple-9"}).user is not None


def test_auth_needs_the_apikey_and_a_bearer_token(stack: DevStack) -> None:
    base = f"{stack.config.api_url}/auth/v1"

    assert httpx.get(f"{base}/user").status_code == 401
    response = httpx.get(f"{base}/user", headers={"apikey": ANON_KEY, "Authorization": "Bearer not.a.jwt"})
    assert response.status_code == 403
    assert response.json()["error_code"] == "bad_jwt"


async def test_realtime_accepts_the_session(client: Client, email: str, stack: DevStack) -> None:
    session = client.auth.sign_up({"email": email, "password": PASSWORD}).session
    assert session is not None
    realtime = AsyncRealtimeClient(f"{stack.config.api_url.replace('http', 'ws')}/realtime/v1", ANON_KEY)
    await realtime.set_auth(session.access_token)
    await realtime.connect()
    states: asyncio.Queue[RealtimeSubscribeStates] = asyncio.Queue()
    channel = realtime.channel("auth-session")
    channel.on_postgres_changes("*", schema="public", table="traders", callback=lambda _: None)
    try:
        await channel.subscribe(lambda state, _error: states.put_nowait(state))
        assert await asyncio.wait_for(states.get(), 10) == RealtimeSubscribeStates.SUBSCRIBED
    finally:
        await realtime.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def strict_auth(stack: DevStack) -> Iterator[str]:
    """A second Auth server on the same database with a sign-in budget of 3 per 5 minutes."""
    port = _free_port()
    env = {**os.environ, "TRADEMIND_DEVSTACK_DIR": str(stack.config.state_dir)}
    argv = [sys.executable, "-m", "devstack.auth", "--port", str(port), "--sign-in-limit", "3"]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the second Auth server did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_sign_in_is_rate_limited_per_client_address(strict_auth: str, email: str) -> None:
    body = {"email": email, "password": "wrong-horse-7"}
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Supabase-Api-Version": "2024-01-01"}

    answers = [
        httpx.post(f"{strict_auth}/token", params={"grant_type": "password"}, json=body, headers=headers)
        for _ in range(4)
    ]

    assert [a.status_code for a in answers] == [400, 400, 400, 429]
    assert answers[-1].json() == {"code": "over_request_rate_limit", "message": "Request rate limit reached"}
    other = httpx.post(
        f"{strict_auth}/token",
        params={"grant_type": "password"},
        json=body,
        headers={**headers, "X-Forwarded-For": "203.0.113.8"},
    )
    assert other.status_code == 400
