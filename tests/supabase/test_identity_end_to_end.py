"""Identity end to end through the gateway: a real sign-up's ES256 session works on PostgREST, Realtime and
every function; forged tokens are refused everywhere with 401 JSON; a destroyed or replaced machine's token
is refused everywhere within a second, and a rolling update's new token works."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from realtime import AsyncRealtimeClient, RealtimePostgresChangesListenEvent, RealtimeSubscribeStates
from supabase import create_client

from devstack import keys
from devstack.fly.client import FlyStandInClient
from devstack.stack import DevStack
from tests.factories import AppUser, create_trader
from tests.supabase.test_lifecycle_functions import IMAGE_REPOSITORY, Fleet, call, fleet, fly, wait_healthy

__all__ = ["fleet", "fly"]  # fixtures shared with the lifecycle tests

# Every function that takes a JWT (machine-token takes a machine credential instead: tested below).
FUNCTIONS = sorted(
    path.parent.name
    for path in (Path(__file__).resolve().parents[2] / "supabase" / "functions").glob("*/index.ts")
    if path.parent.name != "machine-token"
)
AUTH_ERROR_CODES = {"invalid_jwt", "missing_authorization", "machine_token_revoked"}


@pytest.fixture
def session(stack: DevStack, db: psycopg.Connection[Any]) -> Iterator[Any]:
    """A user signed up and then signed in with supabase-py through the gateway, as an app does."""
    client = create_client(stack.config.api_url, stack.config.anon_key)
    email, password = f"e2e-{uuid.uuid4().hex[:10]}@example.com", secrets.token_urlsafe(16) + "7"
    client.auth.sign_up({"email": email, "password": password})
    signed_in = client.auth.sign_in_with_password({"email": email, "password": password}).session
    assert signed_in is not None and signed_in.user is not None
    try:
        yield signed_in
    finally:
        client.auth.close()
        db.execute("delete from auth.users where id = %s", (signed_in.user.id,))


def _rest(stack: DevStack, token: str, path: str = "/users?select=id") -> httpx.Response:
    return httpx.get(
        f"{stack.config.api_url}/rest/v1{path}",
        headers={"apikey": stack.config.anon_key, "Authorization": f"Bearer {token}"},
    )


async def _join(stack: DevStack, token: str, user_id: str) -> tuple[AsyncRealtimeClient, Any, list[Any]]:
    """realtime-py subscribed to the user's traders with `token`; the client, the channel, states seen."""
    client = AsyncRealtimeClient(f"{stack.config.api_url}/realtime/v1", token=stack.config.anon_key)
    await client.connect()
    await client.set_auth(token)
    channel = client.channel(f"e2e-{uuid.uuid4().hex[:8]}")
    states: list[Any] = []
    channel.on_postgres_changes(
        RealtimePostgresChangesListenEvent.All,
        lambda payload: states.append(("change", payload["data"]["type"].value)),
        table="traders",
        schema="public",
        filter=f"user_id=eq.{user_id}",
    )
    channel.on_system(lambda payload: states.append(("system", payload.status, payload.message)))
    await channel.subscribe(lambda state, error: states.append((state, str(error or ""))))
    return client, channel, states


async def _wait_for(condition: Any, timeout_secs: float = 5.0) -> float:
    """Seconds until `condition()` held."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_secs:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def _revoked(states: list[Any]) -> bool:
    """The server shut the channel because its machine token was revoked (realtime-py's CHANNEL_ERROR)."""
    return any(
        state[0] == RealtimeSubscribeStates.CHANNEL_ERROR and "machine token revoked" in state[1]
        for state in states
    )


def _functions_answer(stack: DevStack, token: str) -> dict[str, tuple[int, str | None]]:
    """Every function's status and error code for an empty POST with `token`."""
    answers: dict[str, tuple[int, str | None]] = {}
    for name in FUNCTIONS:
        response = call(stack, name, {}, token)
        try:
            code = response.json().get("error", {}).get("code")
        except ValueError:
            code = None
        answers[name] = (response.status_code, code)
    return answers


async def test_a_signed_up_users_es256_session_works_on_postgrest_realtime_and_every_function(
    stack: DevStack, db: psycopg.Connection[Any], session: Any
) -> None:
    token, user_id = session.access_token, session.user.id
    jwks = (
        await asyncio.to_thread(httpx.get, f"{stack.config.api_url}/auth/v1/.well-known/jwks.json")
    ).json()
    header = jwt.get_unverified_header(token)

    rows = _rest(stack, token).json()
    client, _, states = await _join(stack, token, user_id)
    try:
        await _wait_for(lambda: (RealtimeSubscribeStates.SUBSCRIBED, "") in states)
        create_trader(db, AppUser(uuid.UUID(user_id), session.user.email), "seen live")
        await _wait_for(lambda: ("change", "INSERT") in states)
    finally:
        await client.close()
    answers = _functions_answer(stack, token)

    assert header["alg"] == "ES256" and header["kid"] in {key["kid"] for key in jwks["keys"]}
    assert rows == [{"id": user_id}]
    refused = {
        name: answer for name, answer in answers.items() if answer[0] == 401 or answer[1] in AUTH_ERROR_CODES
    }
    assert refused == {}, "every function accepts the session (it may refuse the empty body or the role)"
    assert answers["ping"][0] == 200


def _sign(claims: dict[str, Any], key: Any, kid: str) -> str:
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid, "typ": "JWT"})


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_forged_none_expired_and_unknown_kid_tokens_are_refused_everywhere_with_401_json(
    stack: DevStack,
) -> None:
    project_kid = stack.config.project_signing_keys()[0].kid
    now, sub = int(time.time()), str(uuid.uuid4())
    claims = {"role": "authenticated", "sub": sub, "aud": "authenticated", "iat": now, "exp": now + 600}
    stranger = ec.generate_private_key(ec.SECP256R1())
    tokens = {
        "wrong key": _sign(claims, stranger, project_kid),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({**claims, 'role': 'service_role'})}.",
        "expired": keys.mint_jwt("authenticated", sub, valid_for_secs=-120),
        "unknown kid": _sign(claims, stranger, str(uuid.uuid4())),
    }

    for what, token in tokens.items():
        rest = _rest(stack, token, "/traders?select=id")
        client, _, states = await _join(stack, token, sub)
        try:
            await _wait_for(lambda seen=states: any(s[0] not in ("system", "change") for s in seen))
        finally:
            await client.close()
        answers = _functions_answer(stack, token)

        assert rest.status_code == 401 and "message" in rest.json(), what
        assert states[0][0] == RealtimeSubscribeStates.CHANNEL_ERROR, (what, states)
        assert {name: answer[0] for name, answer in answers.items()} == dict.fromkeys(FUNCTIONS, 401), what
        assert {answer[1] for answer in answers.values()} <= AUTH_ERROR_CODES, (what, answers)


def _machine_token_renewal(stack: DevStack, machine_id: str, credential: str) -> int:
    response = httpx.post(
        f"{stack.config.api_url}/functions/v1/machine-token",
        json={"machineId": machine_id},
        headers={"apikey": stack.config.anon_key, "Authorization": f"Bearer {credential}"},
    )
    return response.status_code


async def test_a_destroyed_machines_token_is_refused_everywhere_within_a_second(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient
) -> None:
    [(user, machine_id)] = fleet.provisioned(1)
    env = fly.get(machine_id)["config"]["env"]
    token, credential = env["MACHINE_TOKEN"], env["MACHINE_CREDENTIAL"]
    assert _rest(stack, token, "/traders?select=id").status_code == 200
    client, _, states = await _join(stack, token, str(user.id))
    try:
        await _wait_for(lambda: (RealtimeSubscribeStates.SUBSCRIBED, "") in states)

        response = await asyncio.to_thread(call, stack, "destroy-machine", {"userId": str(user.id)})
        destroyed = time.monotonic()
        rest = _rest(stack, token, "/traders?select=id")
        analysis = call(stack, "analyze-signal", {}, token)
        renewal = _machine_token_renewal(stack, machine_id, credential)
        refused_within_secs = time.monotonic() - destroyed
        await _wait_for(lambda: _revoked(states), timeout_secs=3)
        closed_within_secs = time.monotonic() - destroyed
    finally:
        await client.close()

    print(
        f"destroyed machine's token: PostgREST, analyze-signal and machine-token refused"
        f" {refused_within_secs * 1000:.0f} ms, Realtime channel closed {closed_within_secs * 1000:.0f} ms"
        " after destroy-machine returned"
    )
    assert response.status_code == 200, response.text
    assert closed_within_secs < 1.0, "the Realtime channel closes within a second of destroy-machine"
    assert (rest.status_code, rest.json()["code"]) == (401, "PT401")
    assert (analysis.status_code, analysis.json()["error"]["code"]) == (401, "machine_token_revoked")
    assert renewal == 401
    assert refused_within_secs < 1.0, (
        "PostgREST and the functions refuse it as soon as destroy-machine returns"
    )


async def test_a_rolling_update_issues_a_new_identity_and_refuses_the_old_one(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient
) -> None:
    [(user, machine_id)] = fleet.provisioned(1)
    before = fly.get(machine_id)["config"]["env"]
    tag = f"e2e-{uuid.uuid4().hex[:8]}"

    response = call(
        stack, "update-machines", {"image": f"{IMAGE_REPOSITORY}:{tag}", "userIds": [str(user.id)]}
    )
    assert response.status_code == 200, response.text
    wait_healthy(fly, machine_id, tag)
    after = fly.get(machine_id)["config"]["env"]

    assert _rest(stack, before["MACHINE_TOKEN"], "/traders?select=id").status_code == 401
    assert call(stack, "analyze-signal", {}, before["MACHINE_TOKEN"]).status_code == 401
    assert _machine_token_renewal(stack, machine_id, before["MACHINE_CREDENTIAL"]) == 401
    assert _rest(stack, after["MACHINE_TOKEN"], "/traders?select=id").status_code == 200
    assert jwt.decode(after["MACHINE_TOKEN"], options={"verify_signature": False})["machine_gen"] == 2
    assert _machine_token_renewal(stack, machine_id, after["MACHINE_CREDENTIAL"]) == 200
