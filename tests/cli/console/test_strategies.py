"""`trademind strategy new` and `trademind ask`: the AI functions through the gateway, as the user."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from tests.cli.console.conftest import Trader, assert_error, invoke

DESCRIPTION = "Buy ETH on the 15 minute chart when RSI(14) drops below 30"


def test_strategy_new_shows_the_strategy_and_saves_it_when_told(
    db: psycopg.Connection[Any], trader: Trader
) -> None:
    declined = invoke("strategy", "new", DESCRIPTION, "--name", "ETH dips", input_text="n\n")
    saved = invoke("strategy", "new", DESCRIPTION, "--name", "ETH dips", input_text="y\n")

    assert_error(declined, 1, "cancelled: nothing changed")
    assert "def check_signal(symbol, ticker, klines):" in declined.stdout
    assert "get_latest_rsi" in declined.stdout and "analysis instructions" in declined.stdout
    assert "timeframes: 15m; checks every 15m_close" in declined.stdout
    assert saved.exit_code == 0, saved.stderr
    words = " ".join(saved.stdout.split())
    assert "saved ETH dips" in words
    assert "no machine runs it yet: provisioning your machine: user" in words  # cancelled subscription
    assert "has no active subscription" in words
    rows = db.execute(
        "select name, description, check_interval, symbols from traders where user_id = %s", (trader.user.id,)
    ).fetchall()
    assert rows == [("ETH dips", DESCRIPTION, "15m_close", ["ETHUSDT"])]


def test_strategy_new_json_saves_without_asking(db: psycopg.Connection[Any], trader: Trader) -> None:
    result = invoke("strategy", "new", DESCRIPTION, "--json")

    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    row = db.execute("select signal_code from traders where id = %s", (answer["trader"]["id"],)).fetchone()
    assert row == (answer["trader"]["signalCode"],)


def test_strategy_new_with_a_bad_description_is_one_line(trader: Trader) -> None:
    result = invoke("strategy", "new", "buy", "--yes")

    assert_error(result, 1, r"generating the strategy: description must be 10-4000 characters, was 3")


def test_ask_answers_about_a_position(db: psycopg.Connection[Any], trader: Trader) -> None:
    invoke("strategy", "new", DESCRIPTION, "--name", "ETH dips", "--yes")
    trader_row = db.execute("select id from traders where user_id = %s", (trader.user.id,)).fetchone()
    assert trader_row is not None
    signal = db.execute(
        "insert into signals (trader_id, user_id, symbol, status, trigger_price) values (%s, %s, 'ETHUSDT',"
        " 'position_open', 3300) returning id",
        (trader_row[0], trader.user.id),
    ).fetchone()
    assert signal is not None
    position = db.execute(
        "insert into positions (signal_id, user_id, symbol, side, entry_price, size, stop_loss, take_profit)"
        " values (%s, %s, 'ETHUSDT', 'long', 3300, 0.5, 3200, 3500) returning id",
        (signal[0], trader.user.id),
    ).fetchone()
    assert position is not None

    answered = invoke("ask", "Where is my stop?", "--position", str(position[0]))
    by_prefix = invoke("ask", "Where is my stop?", "--position", str(position[0])[:8])  # as tables show it
    unknown_prefix = invoke("ask", "Where is my stop?", "--position", other_prefix(str(position[0])[:8]))
    not_an_id = invoke("ask", "Where is my stop?", "--position", "my-eth")
    about_trader = invoke("ask", "What does it do?", "--trader", "ETH dips")
    nothing = invoke("ask", "Hello?")

    for answer in (answered, by_prefix):
        assert answer.exit_code == 0, answer.stderr
        assert "stop-loss 3200 and take-profit 3500" in " ".join(answer.stdout.split())
    assert_error(unknown_prefix, 1, r"no position '[0-9a-f]{8}' among yours")
    assert_error(not_an_id, 2, r"--position takes a position id or its first 4\+ characters, not 'my-eth'")
    assert about_trader.exit_code == 0 and "ETH dips" in about_trader.stdout
    assert_error(nothing, 2, r"--trader <id> or --position <id>")


def other_prefix(prefix: str) -> str:
    """A prefix of the same length that no position of the test user starts with (its last digit changed)."""
    return prefix[:-1] + format((int(prefix[-1], 16) + 1) % 16, "x")
