"""`trademind keys ...` and `trademind mode ...`: keys via the encrypting RPC, real mode refused clearly."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.cli.console.conftest import Trader, assert_error, invoke
from tests.factories import create_trader

API_KEY = "abcdEFGH1234ijklMNOP5678"
SECRET = "zyxwVUTS9876rqpoNMLK5432"


def test_keys_are_stored_encrypted_and_only_shown_masked(db: psycopg.Connection[Any], trader: Trader) -> None:
    stored = invoke("keys", "set", input_text=f"{API_KEY}\n{SECRET}\n")
    shown = invoke("keys", "show")

    assert stored.exit_code == 0, stored.stderr
    for result in (stored, shown):
        assert API_KEY not in result.stdout + result.stderr and SECRET not in result.stdout + result.stderr
    assert "abcd…5678" in stored.stdout and "abcd…5678" in shown.stdout
    row = db.execute(
        "select api_key_encrypted, api_key_hint from private.binance_credentials where user_id = %s",
        (trader.user.id,),
    ).fetchone()
    assert row is not None and API_KEY.encode() not in bytes(row[0]) and row[1] == "abcd…5678"


def test_bad_keys_are_refused_by_the_rpc_in_one_line(trader: Trader) -> None:
    refused = invoke("keys", "set", input_text="short\nalso-short!\n")

    assert_error(refused, 1, r"storing your keys: api_key must be 16 to 128 letters and digits")
    assert "also-short!" not in refused.stdout + refused.stderr


def test_real_mode_without_keys_or_on_a_plan_without_it_is_refused(
    db: psycopg.Connection[Any], trader: Trader
) -> None:
    trader_id = create_trader(db, trader.user, "Dip buyer")

    without_keys = invoke("mode", "real", "Dip buyer", "--yes")
    invoke("keys", "set", input_text=f"{API_KEY}\n{SECRET}\n")
    cancelled_plan = invoke("mode", "real", "Dip buyer", "--yes")
    db.execute(
        "update users set tier = 'free', subscription_status = 'active' where id = %s", (trader.user.id,)
    )
    free_plan = invoke("mode", "real", "Dip buyer", "--yes")
    bad_mode = invoke("mode", "live", "Dip buyer")

    assert_error(
        without_keys, 1, r"real mode needs your Binance API keys: store them first with trademind keys set"
    )
    assert_error(cancelled_plan, 1, r"needs a paid plan .* yours: pro \(cancelled\)")
    assert_error(free_plan, 1, r"yours: free \(active\)")
    assert bad_mode.exit_code == 2 and "Traceback" not in bad_mode.stdout + bad_mode.stderr
    mode = db.execute("select trading_mode from traders where id = %s", (trader_id,)).fetchone()
    assert mode == ("paper",)


def test_real_mode_asks_naming_what_changes_then_switches(
    db: psycopg.Connection[Any], trader: Trader
) -> None:
    trader_id = create_trader(db, trader.user, "Dip buyer")
    db.execute("update users set subscription_status = 'active' where id = %s", (trader.user.id,))
    invoke("keys", "set", input_text=f"{API_KEY}\n{SECRET}\n")

    declined = invoke("mode", "real", "Dip buyer", input_text="n\n")
    switched = invoke("mode", "real", "Dip buyer", input_text="y\n")
    again = invoke("mode", "real", "Dip buyer")
    back = invoke("mode", "paper", "Dip buyer", "--yes")

    assert_error(declined, 1, "cancelled: nothing changed")
    assert (
        "REAL orders on Binance with your API key abcd…5678: up to $100 per position, 3 open"
        in declined.stdout
    )
    assert switched.exit_code == 0, switched.stderr
    assert "Dip buyer now trades real" in switched.stdout
    assert "trades real already" in again.stdout
    assert back.exit_code == 0 and "now trades paper" in back.stdout
    row = db.execute(
        "select t.trading_mode, u.real_trading_enabled from traders t join users u on u.id = t.user_id"
        " where t.id = %s",
        (trader_id,),
    ).fetchone()
    assert row == ("paper", False), "the last real trader back on paper switches the account off"
