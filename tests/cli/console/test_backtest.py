"""`trademind backtest`: a saved trader or a description replayed over the recordings, shown, charted and
saved as the user's `backtests` row (the stack's generate-strategy writes the code of a description)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from tests.cli.console.conftest import Trader, assert_error, invoke
from tests.worker.backtest.test_run import RSI_DIP

DESCRIPTION = "buy BTC when RSI(14) on 1h drops below 30, sell above 70"
WINDOW = ("--from", "2021-04-05", "--to", "2021-06-05")
# Signals the Gemini stand-in often takes (it opens on RSI 30-40 with the trend, shorts against it).
RSI_BAND = """def check_signal(symbol, ticker, klines):
    k = klines["1h"]
    if len(get_closes(k)) < 15:
        return False
    return 30 <= get_latest_rsi(k, 14) < 45
"""


def rsi_trader(db: psycopg.Connection[Any], trader: Trader, code: str = RSI_DIP) -> str:
    row = db.execute(
        "insert into public.traders (user_id, name, signal_code, ai_instructions, timeframes, check_interval,"
        " reanalysis_interval, symbols, default_stop_loss_percent, default_take_profit_percent)"
        " values (%s, 'RSI dip', %s, 'Be careful.', array['1h'], '1h_close', '1h_close', array['BTCUSDT'],"
        " 3, 6)"
        " returning id",
        (trader.user.id, code),
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_a_saved_trader_is_backtested_charted_and_saved(
    db: psycopg.Connection[Any], trader: Trader, tmp_path: Path
) -> None:
    trader_id = rsi_trader(db, trader)

    result = invoke("backtest", "--trader", trader_id[:8], *WINDOW, "--output", str(tmp_path), "--json")

    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    report = answer["backtest"]
    assert report["trader"] == "RSI dip" and report["symbols"] == ["BTCUSDT"]
    assert report["from"].startswith("2021-04-05") and report["to"].startswith("2021-06-05")
    assert report["closed_trades"] > 0 and len(report["trade_list"]) == report["trades"]
    # the trader's own 3% stop and 6% target closed its positions
    reasons = {trade["close_reason"] for trade in report["trade_list"] if trade["closed_at"]}
    assert reasons <= {"stop_loss", "take_profit"} and reasons
    for trade in report["trade_list"]:
        if trade["close_reason"] == "take_profit":
            assert Decimal(trade["exit_price"]) > Decimal(trade["entry_price"]) * Decimal("1.05")
    assert Path(answer["chart"]).is_file() and Path(answer["chart"]).parent == tmp_path
    row = db.execute(
        "select user_id, trader_id, trader_name, trades, net_pnl_usd, ai, report->>'trades' from backtests"
        " where id = %s",
        (answer["id"],),
    ).fetchone()
    assert row is not None
    assert (str(row[0]), str(row[1]), row[2], row[3], row[5]) == (
        str(trader.user.id), trader_id, "RSI dip", report["trades"], "off",
    )  # fmt: skip
    assert row[4] == Decimal(report["net_pnl_usd"])


def test_a_description_is_backtested_without_saving_a_trader(
    db: psycopg.Connection[Any], trader: Trader, tmp_path: Path
) -> None:
    result = invoke(
        "backtest", "--description", DESCRIPTION, "--ai", "off", *WINDOW, "--output", str(tmp_path)
    )

    assert result.exit_code == 0, result.stderr
    words = " ".join(result.stdout.split())
    for heading in ("trades", "win rate", "net PnL (USDT)", "max drawdown", "Sharpe", "exposure", "symbol"):
        assert heading in words
    assert "BTCUSDT" in words and "chart: " in words and "saved as backtest" in words
    chart = Path(words.split("chart: ")[1].split()[0])
    assert chart.is_file()
    assert db.execute("select count(*) from traders where user_id = %s", (trader.user.id,)).fetchone() == (0,)
    saved = db.execute(
        "select trader_id, symbols from backtests where user_id = %s", (trader.user.id,)
    ).fetchall()
    assert saved == [(None, ["BTCUSDT"])]


def test_bad_options_are_one_line_errors(db: psycopg.Connection[Any], trader: Trader) -> None:
    trader_id = rsi_trader(db, trader)

    assert_error(invoke("backtest", *WINDOW), 2, "exactly one of --trader and --description")
    assert_error(invoke("backtest", "--trader", trader_id, "--ai", "maybe"), 2, "--ai must be one of")
    assert_error(invoke("backtest", "--trader", trader_id, "--fee-bps", "-1"), 2, "--fee-bps")
    assert_error(invoke("backtest", "--trader", trader_id, "--from", "yesterday"), 2, "--from must be an ISO")
    assert_error(
        invoke("backtest", "--trader", trader_id, "--symbols", "DOGEUSDT"),
        1,
        "no recorded candles for DOGEUSDT",
    )
    assert_error(
        invoke("backtest", "--trader", trader_id, "--from", "2030-01-01", "--to", "2030-02-01"), 1,
        "outside the recordings",
    )  # fmt: skip
    assert db.execute("select count(*) from backtests where user_id = %s", (trader.user.id,)).fetchone() == (
        0,
    )


def test_strategy_new_backtests_the_preview_before_it_is_saved(
    db: psycopg.Connection[Any], trader: Trader
) -> None:
    declined = invoke("strategy", "new", DESCRIPTION, "--backtest", input_text="n\n")

    # the backtest is shown before the question, and nothing is saved when the answer is no
    assert_error(declined, 1, "cancelled: nothing changed")
    words = " ".join(declined.stdout.split())
    assert words.index("backtest over the recorded history") < words.index("Save RSI")
    assert "win rate" in words and "max drawdown" in words and "chart: " in words
    saved_rows = db.execute("select count(*) from backtests where user_id = %s", (trader.user.id,)).fetchone()
    assert saved_rows == (0,)
    # saved: the backtest is kept with the trader it tested
    saved = invoke("strategy", "new", DESCRIPTION, "--backtest", "--json")
    assert saved.exit_code == 0, saved.stderr
    answer = json.loads(saved.stdout)
    tested = answer["backtest"]
    assert tested["symbols"] == ["BTCUSDT"] and tested["ai"] == "off" and tested["trades"] > 0
    assert Path(tested["chart"]).is_file()
    row = db.execute("select trader_id, trades from backtests where id = %s", (tested["id"],)).fetchone()
    assert row is not None and (str(row[0]), row[1]) == (answer["trader"]["id"], tested["trades"])


def usage(db: psycopg.Connection[Any], trader: Trader) -> tuple[int, int]:
    """The user's analyze-signal requests and prompt tokens counted today."""
    row = db.execute(
        "select coalesce(sum(requests), 0), coalesce(sum(prompt_tokens), 0) from ai_usage_daily"
        " where user_id = %s",
        (trader.user.id,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_ai_standin_judges_every_signal_and_position_through_analyze_signal(
    db: psycopg.Connection[Any], trader: Trader, tmp_path: Path
) -> None:
    trader_id = rsi_trader(db, trader, RSI_BAND)
    before = usage(db, trader)

    result = invoke(
        "backtest", "--trader", trader_id, "--ai", "standin", "--from", "2021-04-05", "--to", "2021-05-05",
        "--output", str(tmp_path), "--json",
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)["backtest"]
    assert report["ai"] == "standin"
    decisions = report["decisions"]
    # every analysis was a call of the function as the user, counted in their budget, recorded nowhere
    assert report["analyses"] == sum(decisions.values()) > 0
    requests, tokens = usage(db, trader)
    assert requests - before[0] == report["analyses"] and tokens > before[1]
    assert db.execute(
        "select count(*) from analysis_history where user_id = %s", (trader.user.id,)
    ).fetchone() == (0,)
    # the stand-in's entries (not the trader's 3% / 6% defaults) opened the trades; re-analyses judged them
    opened = decisions.get("open_long", 0) + decisions.get("open_short", 0)
    assert 0 < report["trades"] <= opened
    assert set(decisions) - {"open_long", "open_short", "no_trade"}, decisions
    saved = db.execute("select ai from backtests where user_id = %s", (trader.user.id,)).fetchall()
    assert saved == [("standin",)]


def test_ai_errors_are_one_line(db: psycopg.Connection[Any], trader: Trader) -> None:
    trader_id = rsi_trader(db, trader)
    db.execute(
        "insert into ai_usage_daily (user_id, usage_date, prompt_tokens)"
        " select %s, (now() at time zone 'utc')::date, b.daily_tokens - 10"
        " from users u join ai_token_budgets b on b.tier = u.tier where u.id = %s",
        (trader.user.id, trader.user.id),
    )

    assert_error(
        invoke("backtest", "--trader", trader_id, "--ai", "standin", *WINDOW),
        1,
        "the backtest stopped: the AI could not judge a signal: .*budget_exhausted",
    )
    assert db.execute("select count(*) from backtests where user_id = %s", (trader.user.id,)).fetchone() == (
        0,
    )
