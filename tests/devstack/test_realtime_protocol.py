"""The Realtime stand-in speaks Phoenix as supabase/realtime does, via the gateway: frames, joins, errors."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jwt
import psycopg
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from devstack import keys
from devstack.config import REALTIME_PORT
from devstack.stack import DevStack
from tests.factories import AppUser, create_trader, create_user, delete_user, live_machine

TIMEOUT_SECS = 5.0
# The socket fixtures live on the session loop, so the tests must run there too.
pytestmark = pytest.mark.asyncio(loop_scope="session")


class Phoenix:
    """A bare Phoenix client over one socket, either serializer; keeps every frame it receives."""

    def __init__(self, socket: ClientConnection, vsn: str) -> None:
        self.socket = socket
        self.vsn = vsn
        self._ref = 0

    def next_ref(self) -> str:
        self._ref += 1
        return str(self._ref)

    async def push(self, topic: str, event: str, payload: dict[str, Any], join_ref: str | None = None) -> str:
        ref = self.next_ref()
        if self.vsn == "2.0.0":
            await self.socket.send(json.dumps([join_ref, ref, topic, event, payload]))
        else:
            message = {"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": join_ref}
            await self.socket.send(json.dumps(message))
        return ref

    async def receive(self) -> dict[str, Any]:
        """The next frame as {join_ref?, ref, topic, event, payload}; V1 frames must have exactly 4 keys."""
        raw = json.loads(await asyncio.wait_for(self.socket.recv(), TIMEOUT_SECS))
        if self.vsn == "2.0.0":
            join_ref, ref, topic, event, payload = raw
            return {"join_ref": join_ref, "ref": ref, "topic": topic, "event": event, "payload": payload}
        assert set(raw) == {"topic", "event", "payload", "ref"}
        return dict(raw)

    async def receive_event(self, event: str) -> dict[str, Any]:
        while True:
            frame = await self.receive()
            if frame["event"] == event:
                return frame

    async def join(
        self, topic: str, bindings: list[dict[str, Any]], access_token: str | None
    ) -> tuple[str, dict[str, Any]]:
        payload: dict[str, Any] = {
            "config": {
                "broadcast": {"ack": False, "self": False},
                "presence": {"key": "", "enabled": False},
                "private": False,
                "postgres_changes": bindings,
            }
        }
        if access_token is not None:
            payload["access_token"] = access_token
        ref = await self.push(topic, "phx_join", payload, join_ref=str(self._ref + 1))
        reply = await self.receive_event("phx_reply")
        assert reply["ref"] == ref
        return ref, reply


async def _open(url: str, vsn: str, apikey: str = keys.ANON_KEY) -> Phoenix:
    return Phoenix(await connect(f"{url}?apikey={apikey}&vsn={vsn}"), vsn)


@pytest.fixture
def gateway_url(stack: DevStack) -> str:
    return f"ws://127.0.0.1:{stack.config.api_port}/realtime/v1/websocket"


@pytest.fixture(params=["1.0.0", "2.0.0"])
async def client(request: pytest.FixtureRequest, gateway_url: str) -> AsyncIterator[Phoenix]:
    phoenix = await _open(gateway_url, request.param)
    yield phoenix
    await phoenix.socket.close()


@pytest.fixture
def user(db: psycopg.Connection[Any]) -> Iterator[AppUser]:
    app_user = create_user(db)
    yield app_user
    delete_user(db, app_user)


async def test_heartbeat_is_answered_with_the_echoed_ref(client: Phoenix) -> None:
    ref = await client.push("phoenix", "heartbeat", {})

    reply = await client.receive()

    assert reply == {**reply, "topic": "phoenix", "event": "phx_reply", "ref": ref}
    assert reply["payload"] == {"status": "ok", "response": {}}


async def test_join_echoes_each_binding_in_order_with_an_id_then_says_subscribed(
    client: Phoenix, db: psycopg.Connection[Any], user: AppUser
) -> None:
    bindings = [
        {"event": "*", "schema": "public", "table": "traders", "filter": f"user_id=eq.{user.id}"},
        {"event": "INSERT", "schema": "public", "table": "traders"},
    ]

    _, reply = await client.join("realtime:room-1", bindings, user.machine_jwt(live_machine(db, user)))
    system = await client.receive_event("system")

    echoed = reply["payload"]["response"]["postgres_changes"]
    assert reply["payload"]["status"] == "ok"
    assert [{k: v for k, v in entry.items() if k != "id"} for entry in echoed] == bindings
    assert all(isinstance(entry["id"], int) and 0 < entry["id"] < 2**27 for entry in echoed)
    assert system["ref"] is None
    assert system["payload"] == {
        "channel": "room-1",
        "extension": "postgres_changes",
        "message": "Subscribed to PostgreSQL",
        "status": "ok",
    }


async def test_identical_bindings_get_the_same_id_on_every_join(client: Phoenix, user: AppUser) -> None:
    binding = {"event": "*", "schema": "public", "table": "traders"}

    _, first = await client.join("realtime:a", [binding], user.jwt)
    _, second = await client.join("realtime:b", [binding], user.jwt)

    assert (
        first["payload"]["response"]["postgres_changes"][0]["id"]
        == (second["payload"]["response"]["postgres_changes"][0]["id"])
    )


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (keys.mint_jwt("authenticated", valid_for_secs=-5), "InvalidJWTToken: Token has expired"),
        (jwt.encode({"role": "anon", "exp": 2**31}, "x" * 40, algorithm="HS256"), "JwtSignatureError"),
        ("not-a-jwt", "MalformedJWT: The token provided is not a valid JWT"),
        (
            jwt.encode({"sub": "x"}, keys.JWT_SECRET, algorithm="HS256"),
            "InvalidJWTToken: Fields `role` and `exp` are required",
        ),
    ],
)
async def test_a_bad_access_token_is_refused_as_the_real_server_does(
    client: Phoenix, token: str, reason: str
) -> None:
    _, reply = await client.join("realtime:x", [], token)

    assert reply["payload"]["status"] == "error"
    assert reply["payload"]["response"]["reason"].startswith(reason)


async def test_unknown_topics_and_a_bare_topic_are_refused(client: Phoenix) -> None:
    await client.push("realtime:never-joined", "access_token", {"access_token": "x"})
    unmatched = await client.receive()
    _, bare = await client.join("realtime:", [], None)

    assert unmatched["payload"] == {"status": "error", "response": {"reason": "unmatched topic"}}
    assert bare["payload"]["response"]["reason"] == "TopicNameRequired: You must provide a topic name"


async def test_leave_replies_ok_then_closes_with_the_join_ref(client: Phoenix, user: AppUser) -> None:
    join_ref, _ = await client.join("realtime:leaving", [], user.jwt)

    leave_ref = await client.push("realtime:leaving", "phx_leave", {}, join_ref=join_ref)
    reply, close = await client.receive(), await client.receive()

    assert (reply["event"], reply["ref"], reply["payload"]["status"]) == ("phx_reply", leave_ref, "ok")
    assert (close["event"], close["ref"], close["payload"]) == ("phx_close", join_ref, {})


async def test_a_table_outside_the_publication_and_a_bad_filter_get_system_errors(
    client: Phoenix, user: AppUser
) -> None:
    await client.join("realtime:users", [{"event": "*", "schema": "public", "table": "users"}], user.jwt)
    unpublished = await client.receive_event("system")
    await client.join(
        "realtime:bad-filter",
        [{"event": "*", "schema": "public", "table": "traders", "filter": "user_id=like.x"}],
        user.jwt,
    )
    bad_filter = await client.receive_event("system")
    await client.join(
        "realtime:bad-value",
        [{"event": "*", "schema": "public", "table": "traders", "filter": "user_id=eq.not-a-uuid"}],
        user.jwt,
    )
    bad_value = await client.receive_event("system")

    assert unpublished["payload"]["status"] == "error"
    assert unpublished["payload"]["message"].startswith(
        "Unable to subscribe to changes with given parameters"
    )
    assert bad_filter["payload"]["message"].startswith("Error parsing `filter` params")
    assert "invalid value for filter on user_id" in bad_value["payload"]["message"]


async def test_a_new_access_token_resubscribes_and_a_bad_one_closes_the_channel(
    client: Phoenix, db: psycopg.Connection[Any], user: AppUser
) -> None:
    join_ref, _ = await client.join("realtime:t", [{"event": "*", "table": "traders"}], user.jwt)
    await client.receive_event("system")

    await client.push(
        "realtime:t", "access_token", {"access_token": user.machine_jwt(live_machine(db, user))}, join_ref
    )
    again = await client.receive_event("system")
    await client.push("realtime:t", "access_token", {"access_token": "garbage.token.here"}, join_ref)
    refused, closed = await client.receive(), await client.receive()

    assert again["payload"]["message"] == "Subscribed to PostgreSQL"
    assert (refused["event"], refused["payload"]["extension"], refused["payload"]["status"]) == (
        "system",
        "system",
        "error",
    )
    assert (closed["event"], closed["ref"]) == ("phx_close", join_ref)


async def test_a_malformed_frame_closes_only_that_socket(gateway_url: str) -> None:
    bad, good = await _open(gateway_url, "1.0.0"), await _open(gateway_url, "2.0.0")
    try:
        await bad.socket.send("{not json")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(bad.socket.recv(), TIMEOUT_SECS)
        ref = await good.push("phoenix", "heartbeat", {})
        reply = await good.receive()
    finally:
        await bad.socket.close()
        await good.socket.close()

    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    assert reply["ref"] == ref


async def test_the_socket_apikey_is_verified(stack: DevStack) -> None:
    forged = jwt.encode({"role": "service_role", "exp": 2**31}, "y" * 40, algorithm="HS256")
    direct = f"ws://127.0.0.1:{REALTIME_PORT}/socket/websocket"

    with pytest.raises(websockets.InvalidStatus) as refused:
        await connect(f"{direct}?apikey={forged}&vsn=1.0.0")
    with pytest.raises(websockets.InvalidStatus) as missing:
        await connect(f"{direct}?vsn=1.0.0")

    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body)["error"].startswith("JwtSignatureError")
    assert missing.value.response.status_code == 401


async def test_filters_are_typed_and_ids_name_the_bindings_that_matched(
    client: Phoenix, db: psycopg.Connection[Any], user: AppUser
) -> None:
    trader = create_trader(db, user, "filters")
    bindings = [
        {"event": "UPDATE", "schema": "public", "table": "traders", "filter": f"id=eq.{trader}"},
        {"event": "UPDATE", "schema": "public", "table": "traders", "filter": "signal_code_version=gte.2"},
        {"event": "UPDATE", "schema": "public", "table": "traders", "filter": "signal_code_version=lt.2"},
        {"event": "UPDATE", "schema": "public", "table": "traders", "filter": "status=in.(paused,error)"},
        {"event": "UPDATE", "schema": "public", "table": "traders", "filter": "status=neq.active"},
        {"event": "UPDATE", "schema": "public", "table": "traders", "filter": "signal_code_version=gt.10"},
        {"event": "DELETE", "schema": "public", "table": "traders", "filter": f"id=eq.{trader}"},
    ]
    _, reply = await client.join("realtime:filters", bindings, user.jwt)
    ids = [entry["id"] for entry in reply["payload"]["response"]["postgres_changes"]]
    await client.receive_event("system")

    db.execute(
        # A new signal_code bumps signal_code_version to 2 (trigger).
        "update public.traders set signal_code = signal_code || '#', status = 'paused' where id = %s",
        (trader,),
    )
    change = await client.receive_event("postgres_changes")

    assert sorted(change["payload"]["ids"]) == sorted([ids[0], ids[1], ids[3], ids[4]])


async def test_change_payloads_carry_the_real_field_names_and_encodings(
    client: Phoenix, db: psycopg.Connection[Any], user: AppUser
) -> None:
    binding = {"event": "*", "schema": "public", "table": "traders", "filter": f"user_id=eq.{user.id}"}
    await client.join("realtime:payloads", [binding], user.jwt)
    await client.receive_event("system")

    trader = create_trader(db, user, "payloads")
    inserted = (await client.receive_event("postgres_changes"))["payload"]["data"]
    db.execute("update public.traders set name = 'renamed' where id = %s", (trader,))
    updated = (await client.receive_event("postgres_changes"))["payload"]["data"]
    db.execute("delete from public.traders where id = %s", (trader,))
    deleted = (await client.receive_event("postgres_changes"))["payload"]["data"]

    assert set(inserted) == {"schema", "table", "commit_timestamp", "type", "columns", "record", "errors"}
    assert set(updated) == {*inserted, "old_record"}
    assert set(deleted) == set(updated) - {"record"}
    assert (inserted["type"], updated["type"], deleted["type"]) == ("INSERT", "UPDATE", "DELETE")
    record = inserted["record"]
    assert record["id"] == str(trader)
    assert record["timeframes"] == ["1m"]  # arrays and jsonb stay JSON, as to_jsonb renders them
    assert record["risk"] == {
        "max_position_size_usd": 100,
        "max_open_positions": 3,
        "daily_loss_limit_usd": 50,
    }
    assert record["updated_at"].endswith("+00:00")
    assert {"name": "timeframes", "type": "_text"} in inserted["columns"]
    assert {"name": "status", "type": "trader_status"} in inserted["columns"]
    assert updated["record"]["name"] == "renamed"
    # RLS is on for traders: old_record is only the primary key, never null.
    assert updated["old_record"] == deleted["old_record"] == {"id": str(trader)}
    assert inserted["errors"] is None
    assert len(inserted["commit_timestamp"]) == len("2026-01-05T10:11:12.345Z")
    assert inserted["commit_timestamp"].endswith("Z")
    uuid.UUID(record["user_id"])


@pytest.mark.parametrize("role", ["postgres", "supabase_auth_admin", "supabase_admin", "authenticator"])
async def test_tokens_of_roles_the_project_never_issues_are_refused(
    stack: DevStack, client: Phoenix, role: str
) -> None:
    # Signed with the project's own key, as a leaked signing key or an operator's mistake would sign them.
    claims = {"role": role, "exp": int(time.time()) + 600, "sub": str(uuid.uuid4())}
    signed = stack.config.project_signing_keys()[0].sign(claims)
    legacy = jwt.encode(claims, keys.JWT_SECRET, algorithm="HS256")
    direct = f"ws://127.0.0.1:{REALTIME_PORT}/socket/websocket"

    replies = [
        (await client.join(f"realtime:{role}-{i}", [], token))[1] for i, token in enumerate((signed, legacy))
    ]
    with pytest.raises(websockets.InvalidStatus) as as_apikey:
        await connect(f"{direct}?apikey={signed}&vsn=1.0.0")

    expected = f"InvalidJWTToken: the role '{role}' is not one this project issues"
    assert [reply["payload"]["response"]["reason"] for reply in replies] == [expected, expected]
    assert as_apikey.value.response.status_code == 403


async def _closed_within(client: Phoenix, topic: str, timeout_secs: float) -> tuple[dict[str, Any], float]:
    """The system error that shuts `topic` down, and how long after the call it came (phx_close follows)."""
    started = time.monotonic()
    while True:
        frame = await asyncio.wait_for(client.receive(), timeout_secs)
        if frame["topic"] == topic and frame["event"] == "system" and frame["payload"]["status"] == "error":
            elapsed = time.monotonic() - started
            closed = await client.receive()
            assert (closed["topic"], closed["event"]) == (topic, "phx_close")
            return frame, elapsed


async def test_a_destroyed_machines_token_loses_its_channel_within_a_second_and_cannot_join(
    client: Phoenix, db: psycopg.Connection[Any], user: AppUser
) -> None:
    machine_id = live_machine(db, user)
    token = user.machine_jwt(machine_id)
    trader = create_trader(db, user, "machine view")
    binding = {"event": "*", "schema": "public", "table": "traders", "filter": f"user_id=eq.{user.id}"}
    _, joined = await client.join("realtime:machine", [binding], token)
    await client.receive_event("system")

    db.execute(
        "update public.fly_machines set status = 'destroyed', destroyed_at = now() where machine_id = %s",
        (machine_id,),
    )
    refusal, elapsed_secs = await _closed_within(client, "realtime:machine", 2.0)
    db.execute("update public.traders set name = 'after destroy' where id = %s", (trader,))
    _, rejoin = await client.join("realtime:machine-again", [binding], token)

    assert joined["payload"]["status"] == "ok"
    assert refusal["payload"]["message"] == "machine token revoked"
    assert elapsed_secs < 1.0
    assert rejoin["payload"] == {
        "status": "error",
        "response": {"reason": "Unauthorized: machine token revoked"},
    }


async def test_a_replaced_machines_old_token_is_refused_and_its_new_one_joins(
    client: Phoenix, db: psycopg.Connection[Any], user: AppUser
) -> None:
    machine_id = live_machine(db, user)
    binding = {"event": "*", "schema": "public", "table": "traders", "filter": f"user_id=eq.{user.id}"}
    await client.join("realtime:v1", [binding], user.machine_jwt(machine_id, generation=1))
    await client.receive_event("system")

    db.execute("select public.next_machine_token_generation(%s)", (machine_id,))  # what update-machines does
    refusal, elapsed_secs = await _closed_within(client, "realtime:v1", 2.0)
    _, old = await client.join("realtime:v1-again", [binding], user.machine_jwt(machine_id, generation=1))
    _, new = await client.join("realtime:v2", [binding], user.machine_jwt(machine_id, generation=2))

    assert (refusal["payload"]["message"], elapsed_secs < 1.0) == ("machine token revoked", True)
    assert old["payload"]["status"] == "error"
    assert new["payload"]["status"] == "ok"
