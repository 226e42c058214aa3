"""The worker renews its machine token at machine-token while the machine is live, and stops when not."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from devstack.keys import decode, mint_jwt
from devstack.stack import DevStack
from tests.factories import AppUser, create_machine, create_user, delete_user, machine_credential
from worker.clock import LiveClock
from worker.db.client import MachineAuth
from worker.db.machine_token import TokenRenewer, token_lifetime_secs
from worker.errors import ConfigError
from worker.log_setup import RedactingFormatter


@pytest.fixture
def user(db: psycopg.Connection[Any]) -> Iterator[AppUser]:
    created = create_user(db)
    yield created
    delete_user(db, created)


def _renewer(stack: DevStack, auth: MachineAuth, machine_id: str, credential: str) -> TokenRenewer:
    return TokenRenewer(
        auth,
        functions_url=f"{stack.config.api_url}/functions/v1",
        machine_id=machine_id,
        credential=credential,
        clock=LiveClock(),
    )


def _reads_traders(stack: DevStack, token: str) -> int:
    response = httpx.get(
        f"{stack.config.api_url}/rest/v1/traders?select=id",
        headers={"apikey": stack.config.anon_key, "Authorization": f"Bearer {token}"},
    )
    return response.status_code


async def test_the_renewer_swaps_in_a_fresh_token_before_the_old_one_expires(
    stack: DevStack, db: psycopg.Connection[Any], user: AppUser
) -> None:
    machine_id = create_machine(db, user)
    # A token with 4 s to live: three quarters of that is when the renewer asks for the next one.
    first = mint_jwt(
        "trader_machine", user.id, valid_for_secs=4, extra_claims={"machine_id": machine_id, "machine_gen": 1}
    )
    auth = MachineAuth(stack.config.anon_key, first)
    renewer = _renewer(stack, auth, machine_id, machine_credential(machine_id))

    task = asyncio.create_task(renewer.run())
    try:
        started = time.monotonic()
        while auth.token == first and time.monotonic() - started < 10:  # noqa: ASYNC110 - plain state
            await asyncio.sleep(0.05)
        renewed_after_secs = time.monotonic() - started
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    claims = decode(auth.token)
    issued, expires = token_lifetime_secs(auth.token)
    assert 2.0 <= renewed_after_secs < 4.0
    assert (claims["role"], claims["sub"], claims["machine_id"], claims["machine_gen"]) == (
        "trader_machine",
        str(user.id),
        machine_id,
        1,
    )
    assert expires - issued == 3600
    assert await asyncio.to_thread(_reads_traders, stack, auth.token) == 200


async def test_a_destroyed_or_replaced_machine_cannot_renew(
    stack: DevStack, db: psycopg.Connection[Any], user: AppUser
) -> None:
    machine_id = create_machine(db, user)
    auth = MachineAuth(stack.config.anon_key, user.machine_jwt(machine_id))
    wrong = _renewer(stack, auth, machine_id, machine_credential(machine_id, generation=7))
    with pytest.raises(ConfigError, match="machine_credential_refused"):
        await wrong.renew()

    db.execute("select public.next_machine_token_generation(%s)", (machine_id,))  # a rolling update
    with pytest.raises(ConfigError, match="destroyed or replaced"):
        await _renewer(stack, auth, machine_id, machine_credential(machine_id, 1)).renew()
    renewed = await _renewer(stack, auth, machine_id, machine_credential(machine_id, 2)).renew()
    assert decode(renewed)["machine_gen"] == 2

    db.execute(
        "update public.fly_machines set status = 'destroyed', destroyed_at = now() where machine_id = %s",
        (machine_id,),
    )
    with pytest.raises(ConfigError):
        await _renewer(stack, auth, machine_id, machine_credential(machine_id, 2)).renew()
    assert await asyncio.to_thread(_reads_traders, stack, renewed) == 401


def test_renewed_tokens_are_masked_in_logs() -> None:
    token = mint_jwt("trader_machine", extra_claims={"machine_id": "m-1"})
    record = logging.LogRecord("worker", logging.INFO, __file__, 1, "token=%s", (token,), None)

    line = RedactingFormatter([]).format(record)

    assert token not in line
    assert line.endswith("token=***")
