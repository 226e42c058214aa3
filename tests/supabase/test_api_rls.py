"""Row level security as clients see it: supabase-py and plain HTTP through the local gateway."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from postgrest.exceptions import APIError
from supabase import Client, ClientOptions, create_client

from devstack.stack import DevStack
from tests.factories import SIGNAL_CODE, AppUser, create_machine

ClientFactory = Callable[..., Client]


@pytest.fixture
def client_for(stack: DevStack) -> Iterator[ClientFactory]:
    """Make supabase-py clients on the anon key, acting as a JWT when given (as a signed-in app would)."""
    clients: list[Client] = []

    def make(jwt: str | None = None, *, key: str | None = None) -> Client:
        headers = {"Authorization": f"Bearer {jwt}"} if jwt else {}
        client = create_client(
            stack.config.api_url,
            key or stack.config.anon_key,
            ClientOptions(headers=headers, auto_refresh_token=False, persist_session=False),
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.postgrest.aclose()  # closes its httpx session (the name is historical; it is sync)


def trader_row(user: AppUser, name: str) -> dict[str, Any]:
    return {
        "user_id": str(user.id),
        "name": name,
        "signal_code": SIGNAL_CODE,
        "ai_instructions": "Only trade with the trend.",
        "timeframes": ["5m"],
        "check_interval": "5m_close",
        "reanalysis_interval": "15m",
    }


def test_user_reads_only_its_own_traders(
    client_for: ClientFactory, stack: DevStack, alice: AppUser, bob: AppUser
) -> None:
    rows = client_for(alice.jwt).table("traders").select("name, user_id").execute().data

    assert rows == [{"name": "alice's trader", "user_id": str(alice.id)}]


def test_user_creates_its_own_trader_but_not_one_for_someone_else(
    client_for: ClientFactory, stack: DevStack, alice: AppUser, bob: AppUser
) -> None:
    client = client_for(alice.jwt)

    created = client.table("traders").insert(trader_row(alice, "second")).execute().data
    with pytest.raises(APIError) as refused:
        client.table("traders").insert(trader_row(bob, "planted")).execute()

    assert created[0]["name"] == "second"
    assert created[0]["signal_code_version"] == 1
    assert refused.value.code == "42501"
    assert "row-level security" in str(refused.value.message)


def test_invalid_trader_is_refused_with_the_constraint_named(
    client_for: ClientFactory, stack: DevStack, alice: AppUser
) -> None:
    with pytest.raises(APIError) as refused:
        client_for(alice.jwt).table("traders").insert(
            trader_row(alice, "bad") | {"check_interval": "7m"}
        ).execute()

    assert refused.value.code == "23514"
    assert "traders_check_interval_valid" in str(refused.value.message)


def test_user_cannot_update_another_users_trader(
    client_for: ClientFactory, stack: DevStack, db: psycopg.Connection[Any], alice: AppUser, bob: AppUser
) -> None:
    updated = (
        client_for(alice.jwt)
        .table("traders")
        .update({"status": "paused"})
        .eq("user_id", str(bob.id))
        .execute()
    )

    bob_status = db.execute(
        "select status::text from public.traders where user_id = %s", (bob.id,)
    ).fetchone()
    assert updated.data == []
    assert bob_status == ("active",)


def test_anon_key_cannot_read_users(client_for: ClientFactory, stack: DevStack, alice: AppUser) -> None:
    with pytest.raises(APIError) as refused:
        client_for().table("users").select("*").execute()

    assert refused.value.code == "42501"


def test_machine_creates_signals_only_through_the_transition_function_and_for_its_user_only(
    client_for: ClientFactory, stack: DevStack, db: psycopg.Connection[Any], alice: AppUser, bob: AppUser
) -> None:
    machine = client_for(alice.machine_jwt(create_machine(db, alice)))
    alice_trader = machine.table("traders").select("id").execute().data
    bob_trader = db.execute("select id from public.traders where user_id = %s", (bob.id,)).fetchone()
    assert bob_trader is not None
    signal_id = str(uuid.uuid4())
    row = {"trader_id": alice_trader[0]["id"], "symbol": "BTCUSDT", "trigger_price": "97123.45"}

    with pytest.raises(APIError) as direct:
        machine.table("signals").insert({**row, "id": str(uuid.uuid4()), "user_id": str(alice.id)}).execute()
    created = machine.rpc("trading_create_signal", {**row, "signal_id": signal_id}).execute().data
    with pytest.raises(APIError) as bobs:
        machine.rpc(
            "trading_create_signal",
            {
                "signal_id": str(uuid.uuid4()),
                "trader_id": str(bob_trader[0]),
                "symbol": "BTCUSDT",
                "trigger_price": "1",
            },
        ).execute()

    stored = db.execute(
        "select user_id, trigger_price::text from public.signals where id = %s", (signal_id,)
    ).fetchone()
    assert direct.value.code == "42501"
    assert created == "created"
    assert stored == (alice.id, "97123.45")
    assert bobs.value.code == "P0002"
    assert db.execute("select count(*) from public.signals where user_id = %s", (bob.id,)).fetchone() == (0,)


def test_retried_signal_creation_is_a_no_op(
    client_for: ClientFactory, stack: DevStack, db: psycopg.Connection[Any], alice: AppUser
) -> None:
    machine = client_for(alice.machine_jwt(create_machine(db, alice)))
    trader_id = machine.table("traders").select("id").execute().data[0]["id"]
    row = {
        "signal_id": str(uuid.uuid4()),
        "trader_id": trader_id,
        "symbol": "ETHUSDT",
        "trigger_price": "3300",
    }

    answers = [machine.rpc("trading_create_signal", row).execute().data for _ in range(2)]

    count = db.execute("select count(*) from public.signals where trader_id = %s", (trader_id,)).fetchone()
    assert answers == ["created", "created"]
    assert count == (1,)


def test_service_role_reads_every_user(
    client_for: ClientFactory, stack: DevStack, alice: AppUser, bob: AppUser
) -> None:
    service = client_for(key=stack.config.service_role_key)

    ids = {
        row["id"]
        for row in service.table("users").select("id").in_("id", [str(alice.id), str(bob.id)]).execute().data
    }

    assert ids == {str(alice.id), str(bob.id)}


def test_curl_style_request_returns_only_that_users_rows(
    client_for: ClientFactory, stack: DevStack, alice: AppUser, bob: AppUser
) -> None:
    response = httpx.get(
        f"{stack.config.api_url}/rest/v1/traders",
        params={"select": "user_id"},
        headers={"apikey": stack.config.anon_key, "Authorization": f"Bearer {alice.jwt}"},
    )

    assert response.status_code == 200
    assert response.json() == [{"user_id": str(alice.id)}]


def test_schema_version_is_callable_by_machines(
    client_for: ClientFactory, stack: DevStack, db: psycopg.Connection[Any], alice: AppUser
) -> None:
    version = client_for(alice.machine_jwt(create_machine(db, alice))).rpc("schema_version").execute().data

    assert version == 2


def test_responses_are_capped_at_max_rows(
    client_for: ClientFactory, stack: DevStack, db: psycopg.Connection[Any], alice: AppUser
) -> None:
    db.execute(
        "insert into public.signals (trader_id, user_id, symbol, status, trigger_price, closed_at)"
        " select t.id, t.user_id, 'SYM' || n, 'closed', 1, now()"
        " from public.traders t, generate_series(1, %s) as n where t.user_id = %s",
        (stack.config.max_rows + 1, alice.id),
    )

    rows = client_for(alice.jwt).table("signals").select("id").execute().data

    assert len(rows) == stack.config.max_rows == 1000
