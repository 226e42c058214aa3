"""`trademind machine ...` against a real worker: provision-machine, restart-machine and destroy-machine,
called with the trader's session, the Fly stand-in, and a `python -m worker` process."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from devstack.config import EXCHANGE_PORT
from devstack.fly.client import FlyStandInClient
from tests.cli.console.conftest import Trader, assert_error, invoke, machine_health
from tests.factories import create_trader

EXCHANGE_URL = f"http://127.0.0.1:{EXCHANGE_PORT}"


def machine_id_of(db: psycopg.Connection[Any], trader: Trader) -> str:
    row = db.execute(
        "select machine_id from fly_machines where user_id = %s and status <> 'destroyed'", (trader.user.id,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_provision_status_restart_with_keys_and_destroy(
    db: psycopg.Connection[Any], subscriber: Trader, fly: FlyStandInClient
) -> None:
    create_trader(db, subscriber.user, "Dip buyer")

    provisioned = invoke("machine", "provision")
    machine_id = machine_id_of(db, subscriber)
    machine_health(fly, machine_id, lambda body: body["activeTraders"] == 1)
    status = invoke("machine", "status")
    first_env = fly.get(machine_id)["config"]["env"]
    # An account on the stack's exchange simulator, so the worker's real venue accepts the keys.
    account = httpx.post(f"{EXCHANGE_URL}/_sim/accounts", json={"balances": {"USDT": "1000"}}).json()
    api_key, secret = account["apiKey"], account["secretKey"]
    invoke("keys", "set", input_text=f"{api_key}\n{secret}\n")
    to_real = invoke("mode", "real", "Dip buyer", "--yes")
    real_env = fly.get(machine_id)["config"]["env"]
    unconfirmed = invoke("machine", "restart")
    restarted = invoke("machine", "restart", "--yes")
    second_env = fly.get(machine_id)["config"]["env"]
    to_paper = invoke("mode", "paper", "Dip buyer", "--yes")
    paper_env = fly.get(machine_id)["config"]["env"]
    destroyed = invoke("machine", "destroy", "--yes")
    after = invoke("machine", "status")

    assert provisioned.exit_code == 0, provisioned.stderr
    assert f"provisioned: machine {machine_id}" in provisioned.stdout
    assert status.exit_code == 0 and "healthy" in status.stdout and "traders 1" in status.stdout
    assert "BINANCE_API_KEY" not in first_env and first_env["PAPER_TRADING_ONLY"] == "true"
    # Switching the first trader to real restarted the machine with the keys and a fresh token.
    assert to_real.exit_code == 0, to_real.stderr
    assert f"your machine {machine_id} restarted with your keys" in to_real.stdout
    assert real_env["BINANCE_API_KEY"] == api_key and real_env["PAPER_TRADING_ONLY"] == "false"
    assert real_env["MACHINE_TOKEN"] != first_env["MACHINE_TOKEN"]
    assert_error(unconfirmed, 2, "needs a confirmation")
    assert restarted.exit_code == 0, restarted.stderr
    assert f"restarted machine {machine_id}" in restarted.stdout and "healthy" in restarted.stdout
    # Real trading still on: a plain restart keeps the keys and renews the token.
    assert second_env["BINANCE_API_KEY"] == api_key and second_env["PAPER_TRADING_ONLY"] == "false"
    assert second_env["MACHINE_TOKEN"] != real_env["MACHINE_TOKEN"]
    assert api_key not in restarted.stdout + restarted.stderr
    # The last real trader back on paper: the keys leave the machine.
    assert f"your machine {machine_id} restarted without keys" in to_paper.stdout
    assert "BINANCE_API_KEY" not in paper_env and paper_env["PAPER_TRADING_ONLY"] == "true"
    assert destroyed.exit_code == 0 and f"destroyed {machine_id} (graceful)" in destroyed.stdout
    assert "no machine" in after.stdout


def test_restart_without_a_machine_is_one_line(subscriber: Trader) -> None:
    result = invoke("machine", "restart", "--yes")

    assert_error(result, 1, r"restarting your machine: user .* has no machine: provision one first")
