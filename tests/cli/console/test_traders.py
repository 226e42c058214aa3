"""`trademind traders ...` against the local stack, as the signed-in user."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from tests.cli.console.conftest import Trader, assert_error, invoke
from tests.factories import create_trader, create_user, delete_user


def test_list_and_show_the_users_own_traders_only(db: psycopg.Connection[Any], trader: Trader) -> None:
    mine = create_trader(db, trader.user, "Dip buyer")
    other = create_user(db)
    create_trader(db, other, "Someone else's")
    try:
        listed = invoke("traders", "list", "--json")
        shown = invoke("traders", "show", str(mine)[:8])
        table = invoke("traders", "list")
    finally:
        delete_user(db, other)

    assert listed.exit_code == 0, listed.stderr
    assert [row["name"] for row in json.loads(listed.stdout)] == ["Dip buyer"]
    assert shown.exit_code == 0, shown.stderr
    assert "Dip buyer" in shown.stdout and "def check_signal(symbol, ticker, klines):" in shown.stdout
    assert "$100/position, 3 open max, $50/day loss limit" in shown.stdout
    assert "Dip buyer" in table.stdout and "1 trader(s)" in table.stdout


def test_pause_and_resume_change_the_status(db: psycopg.Connection[Any], trader: Trader) -> None:
    trader_id = create_trader(db, trader.user, "Dip buyer")

    paused = invoke("traders", "pause", "Dip buyer")
    status_after_pause = db.execute("select status from traders where id = %s", (trader_id,)).fetchone()
    resumed = invoke("traders", "resume", str(trader_id))
    status_after_resume = db.execute("select status from traders where id = %s", (trader_id,)).fetchone()

    assert paused.exit_code == 0 and "paused Dip buyer" in paused.stdout
    assert status_after_pause == ("paused",)
    assert resumed.exit_code == 0 and "resumed Dip buyer" in resumed.stdout
    assert status_after_resume == ("active",)


def test_edit_goes_through_the_databases_rules(db: psycopg.Connection[Any], trader: Trader) -> None:
    trader_id = create_trader(db, trader.user, "Dip buyer")

    edited = invoke(
        "traders", "edit", str(trader_id), "--symbols", "btcusdt,ETHUSDT", "--interval", "15m",
        "--max-position-usd", "250.5", "--max-open-positions", "2",
    )  # fmt: skip
    negative = invoke("traders", "edit", str(trader_id), "--daily-loss-limit-usd", "-5")
    bad_interval = invoke("traders", "edit", str(trader_id), "--interval", "7m")
    bad_symbols = invoke("traders", "edit", str(trader_id), "--symbols", "BTC-USDT")
    not_a_number = invoke("traders", "edit", str(trader_id), "--max-position-usd", "lots")
    nothing = invoke("traders", "edit", str(trader_id))

    assert edited.exit_code == 0, edited.stderr
    row = db.execute(
        "select symbols, check_interval, risk from traders where id = %s", (trader_id,)
    ).fetchone()
    assert row is not None
    assert row[0] == ["BTCUSDT", "ETHUSDT"] and row[1] == "15m"
    assert row[2] == {"max_position_size_usd": 250.5, "max_open_positions": 2, "daily_loss_limit_usd": 50}
    assert_error(negative, 1, r"refused by the database: risk limits: .*daily loss limit 0 USD or more")
    assert_error(bad_interval, 1, r"refused by the database: interval must be one of")
    assert_error(bad_symbols, 1, r"refused by the database: symbols must be")
    assert_error(not_a_number, 2, r"--max-position-usd must be a number, not 'lots'")
    assert_error(nothing, 2, r"nothing to change")
    risk = db.execute("select risk from traders where id = %s", (trader_id,)).fetchone()
    assert risk is not None and risk[0]["daily_loss_limit_usd"] == 50, "a refused edit changes nothing"


def test_unknown_or_foreign_trader_ids_are_one_line(db: psycopg.Connection[Any], trader: Trader) -> None:
    other = create_user(db)
    theirs = create_trader(db, other, "Someone else's")
    try:
        foreign = invoke("traders", "pause", str(theirs))
        unknown = invoke("traders", "show", "no-such-trader")
        bad_status = invoke("traders", "list", "--status", "sleeping")
    finally:
        delete_user(db, other)

    assert_error(foreign, 1, rf"no trader {theirs} among yours")
    assert_error(unknown, 1, r"no trader 'no-such-trader' among yours")
    assert_error(bad_status, 2, r"--status must be active, paused or error")


def test_delete_asks_and_refuses_while_positions_are_open(
    db: psycopg.Connection[Any], trader: Trader
) -> None:
    keep = create_trader(db, trader.user, "Holder")
    signal = db.execute(
        "insert into signals (trader_id, user_id, symbol, status, trigger_price) values (%s, %s, 'BTCUSDT',"
        " 'position_open', 42000) returning id",
        (keep, trader.user.id),
    ).fetchone()
    assert signal is not None
    db.execute(
        "insert into positions (signal_id, user_id, symbol, side, entry_price, size)"
        " values (%s, %s, 'BTCUSDT', 'long', 42000, 0.01)",
        (signal[0], trader.user.id),
    )
    gone = create_trader(db, trader.user, "Old idea")

    refused = invoke("traders", "delete", "Holder", "--yes")
    unanswered = invoke("traders", "delete", "Old idea")
    declined = invoke("traders", "delete", "Old idea", input_text="n\n")
    deleted = invoke("traders", "delete", "Old idea", input_text="y\n")

    assert_error(refused, 1, r"Holder has 1 open position\(s\): pause it")
    assert_error(unanswered, 2, r"needs a confirmation")
    assert_error(declined, 1, r"cancelled: nothing changed")
    assert deleted.exit_code == 0, deleted.stderr
    remaining = db.execute("select id from traders where user_id = %s", (trader.user.id,)).fetchall()
    assert remaining == [(keep,)]
    assert gone != keep
