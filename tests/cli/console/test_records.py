"""`trademind positions | trades | signals | analyses`: filters, paging, JSON and CSV, as the user."""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path
from typing import Any

import psycopg

from tests.cli.console.conftest import Trader, assert_error, invoke
from tests.factories import create_trader, create_user, delete_user


def history(db: psycopg.Connection[Any], user_id: uuid.UUID, trader_id: uuid.UUID, count: int,
            *, age_hours: float = 0) -> None:  # fmt: skip
    """`count` closed round trips (signal, position, buy and sell trade, analysis), `age_hours` old."""
    for index in range(count):
        signal, position = uuid.uuid4(), uuid.uuid4()
        when = f"now() - interval '{age_hours} hours' - interval '{index} minutes'"
        db.execute(
            "insert into signals (id, trader_id, user_id, symbol, status, trigger_price, closed_at,"
            ' "timestamp")'
            f" values (%s, %s, %s, 'ETHUSDT', 'closed', 3300, now(), {when})",
            (signal, trader_id, user_id),
        )
        db.execute(
            "insert into positions (id, signal_id, user_id, symbol, side, entry_price, size, status,"
            " exit_price, pnl, closed_at, opened_at)"
            f" values (%s, %s, %s, 'ETHUSDT', 'long', 3300, 0, 'closed', 3366, 0.66, now(), {when})",
            (position, signal, user_id),
        )
        for side, price in (("BUY", "3300"), ("SELL", "3366")):
            db.execute(
                "insert into trades (position_id, signal_id, user_id, type, side, symbol, price, quantity,"
                " status, client_order_id, executed_at) values (%s, %s, %s, 'paper', %s, 'ETHUSDT', %s, 0.01,"
                " 'filled',"
                f" %s, {when})",
                (position, signal, user_id, side, price, f"t{uuid.uuid4().hex[:20]}"),
            )
        db.execute(
            "insert into analysis_history (signal_id, trader_id, user_id, decision, reasoning, confidence,"
            f" \"timestamp\") values (%s, %s, %s, 'open_long', 'Breakout, with volume.', 70, {when})",
            (signal, trader_id, user_id),
        )


def test_trades_filter_by_trader_and_since_and_page(db: psycopg.Connection[Any], trader: Trader) -> None:
    fast = create_trader(db, trader.user, "Fast")
    slow = create_trader(db, trader.user, "Slow")
    history(db, trader.user.id, fast, 3)
    history(db, trader.user.id, slow, 2, age_hours=48)

    everything = json.loads(invoke("trades", "--json", "--limit", "100").stdout)
    fast_only = json.loads(invoke("trades", "--trader", "Fast", "--json").stdout)
    recent = json.loads(invoke("trades", "--since", "1d", "--json").stdout)
    first = json.loads(invoke("trades", "--limit", "4", "--json").stdout)
    second = json.loads(invoke("trades", "--limit", "4", "--page", "2", "--json").stdout)
    table = invoke("trades", "--limit", "4")

    assert len(everything) == 10
    assert len(fast_only) == 6 and {row["signals"]["trader_id"] for row in fast_only} == {str(fast)}
    assert len(recent) == 6
    assert len(first) == 4 and len(second) == 4
    assert not {row["id"] for row in first} & {row["id"] for row in second}
    assert [row["executed_at"] for row in everything] == sorted(
        (row["executed_at"] for row in everything), reverse=True
    )
    assert "4 trades (page 1); --page 2 for older" in table.stdout


def test_csv_export_writes_every_matching_row(
    db: psycopg.Connection[Any], trader: Trader, tmp_path: Path
) -> None:
    trader_id = create_trader(db, trader.user, "Fast")
    history(db, trader.user.id, trader_id, 3)
    target = tmp_path / "trades.csv"

    written = invoke("trades", "--trader", "Fast", "--csv", str(target), "--limit", "2")
    to_stdout = invoke("positions", "--status", "closed", "--csv", "-")

    assert written.exit_code == 0, written.stderr
    rows = list(csv.DictReader(target.read_text().splitlines()))
    assert len(rows) == 6, "a CSV export has every page unless --page is given"
    assert {row["side"] for row in rows} == {"BUY", "SELL"} and {row["price"] for row in rows} == {
        "3300",
        "3366",
    }
    assert list(rows[0])[:3] == ["id", "executed_at", "symbol"]
    positions = list(csv.DictReader(io.StringIO(to_stdout.stdout)))
    assert len(positions) == 3 and {row["pnl"] for row in positions} == {"0.66"}


def test_signals_and_analyses_and_statuses(db: psycopg.Connection[Any], trader: Trader) -> None:
    trader_id = create_trader(db, trader.user, "Fast")
    history(db, trader.user.id, trader_id, 2)
    other = create_user(db)
    history(db, other.id, create_trader(db, other, "Theirs"), 2)
    try:
        signals = json.loads(invoke("signals", "--status", "closed", "--json").stdout)
        analyses = json.loads(invoke("analyses", "--status", "open_long", "--json").stdout)
        analyses_table = invoke("analyses")
        positions_table = invoke("positions")
        open_positions = json.loads(invoke("positions", "--status", "open", "--json").stdout)
        bad_status = invoke("positions", "--status", "sideways")
        bad_since = invoke("signals", "--since", "yesterday")
        bad_limit = invoke("signals", "--limit", "0")
    finally:
        delete_user(db, other)

    assert len(signals) == 2 and all(row["trader_id"] == str(trader_id) for row in signals)
    assert len(analyses) == 2 and analyses[0]["reasoning"] == "Breakout, with volume."
    assert "Breakout, with volume." in analyses_table.stdout
    assert open_positions == []
    mine = [
        str(row[0]) for row in db.execute("select id from positions where user_id = %s", (trader.user.id,))
    ]
    # Each row shows the id prefix that `trademind ask --position` takes.
    assert len(mine) == 2 and all(id_[:8] in positions_table.stdout for id_ in mine), positions_table.stdout
    assert_error(bad_status, 2, r"--status must be one of open, closed, not 'sideways'")
    assert_error(bad_since, 2, r"--since must be like 30m, 12h")
    assert bad_limit.exit_code == 2 and "Traceback" not in bad_limit.stdout + bad_limit.stderr
