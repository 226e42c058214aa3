"""Every decision in paper mode, against the real local stack (PostgREST, the transition RPCs, RLS)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg

from tests.worker.trading.helpers import decision, trading_env
from worker.domain.enums import AnalysisDecision as D
from worker.domain.enums import PositionSide
from worker.domain.ledger import add, net_pnl, open_book, reduce

FEE = Decimal("0.001")


async def test_no_trade_closes_the_signal(db: psycopg.Connection[Any]) -> None:
    async with trading_env(db) as env:
        signal_id = env.new_signal()
        await env.executor.execute(env.context(signal_id), decision(D.NO_TRADE))
        row = env.row("select status, close_reason from signals where id = %s", signal_id)
    assert row["status"] == "closed"
    assert row["close_reason"].startswith("no_trade")


async def test_watch_moves_a_new_signal_to_watching(db: psycopg.Connection[Any]) -> None:
    async with trading_env(db) as env:
        signal_id = env.new_signal()
        await env.executor.execute(env.context(signal_id), decision(D.WATCH))
        await env.executor.execute(env.context(signal_id), decision(D.WATCH))
        assert env.row("select status from signals where id = %s", signal_id)["status"] == "watching"


async def test_open_long_records_position_trade_balance_and_signal(db: psycopg.Connection[Any]) -> None:
    async with trading_env(db, risk=(1000, 3, 500)) as env:
        signal_id = env.new_signal()
        await env.executor.execute(
            env.context(signal_id),
            decision(D.OPEN_LONG, stop_loss="39000", take_profit="42000", position_size="0.5"),
        )
        position = env.row("select * from positions where signal_id = %s", signal_id)
        trade = env.row("select * from trades where position_id = %s", position["id"])
        balance = env.row("select balance_usd from paper_accounts where user_id = %s", env.user.id)[
            "balance_usd"
        ]
        signal = env.row("select status from signals where id = %s", signal_id)
    # 0.5 x 1000 USD at 40000 = 0.0125 BTC; fee 0.1 % of 500 USD.
    assert position["side"] == "long" and position["status"] == "open"
    assert position["size"] == Decimal("0.0125")
    assert position["entry_price"] == Decimal(40000)
    assert (position["stop_loss"], position["take_profit"]) == (Decimal(39000), Decimal(42000))
    assert position["fees_paid"] == Decimal("0.5")
    assert trade["status"] == "filled" and trade["side"] == "BUY" and trade["type"] == "paper"
    assert trade["client_order_id"].startswith("tm")
    assert balance == Decimal(10000) - Decimal(500) - Decimal("0.5")
    assert signal["status"] == "position_open"


async def test_open_short_then_close_realises_exact_pnl(db: psycopg.Connection[Any]) -> None:
    async with trading_env(db) as env:
        signal_id = env.new_signal()
        await env.executor.execute(
            env.context(signal_id),
            decision(D.OPEN_SHORT, stop_loss="41000", take_profit="38000", position_size="0.4"),
        )
        env.set_price("BTCUSDT", Decimal("39123.45"))
        await env.executor.execute(env.context(signal_id), decision(D.CLOSE))
        position = env.row("select * from positions where signal_id = %s", signal_id)
        balance = env.row("select balance_usd from paper_accounts where user_id = %s", env.user.id)[
            "balance_usd"
        ]
        signal = env.row("select status, close_reason from signals where id = %s", signal_id)
    size = Decimal("0.01")  # 400 USD at 40000
    book = open_book(position_side("short"), size, Decimal(40000), size * 40000 * FEE)
    exit_fee = size * Decimal("39123.45") * FEE
    closed, _ = reduce(book, size, Decimal("39123.45"), exit_fee)
    assert position["status"] == "closed" and position["size"] == 0
    assert position["close_reason"] == "decision"
    assert (
        position["pnl"]
        == net_pnl(closed)
        == (Decimal(40000) - Decimal("39123.45")) * size - book.fees_paid - exit_fee
    )
    assert position["exit_price"] == Decimal("39123.45")
    assert balance == Decimal(10000) + net_pnl(closed)
    assert signal["status"] == "closed"


async def test_partial_close_scale_in_scale_out_keep_the_book_exact(db: psycopg.Connection[Any]) -> None:
    async with trading_env(db, risk=(2000, 3, 500)) as env:
        signal_id = env.new_signal()
        await env.executor.execute(
            env.context(signal_id),
            decision(D.OPEN_LONG, stop_loss="30000", take_profit="50000", position_size="0.5"),
        )
        env.set_price("BTCUSDT", Decimal("41000.10"))
        await env.executor.execute(env.context(signal_id), decision(D.SCALE_IN, scale_in_amount="0.5"))
        env.set_price("BTCUSDT", Decimal("42000.33"))
        await env.executor.execute(env.context(signal_id), decision(D.PARTIAL_CLOSE, close_percentage="0.5"))
        env.set_price("BTCUSDT", Decimal("39999.99"))
        await env.executor.execute(env.context(signal_id), decision(D.SCALE_OUT, scale_out_percentage="0.3"))
        position = env.row("select * from positions where signal_id = %s", signal_id)
        trades = env.rows(
            "select side, quantity, price, realized_pnl from trades where position_id = %s"
            " order by executed_at",
            position["id"],
        )
        balance = env.row("select balance_usd from paper_accounts where user_id = %s", env.user.id)[
            "balance_usd"
        ]
    side = position_side("long")
    book = open_book(side, Decimal("0.025"), Decimal(40000), Decimal("0.025") * 40000 * FEE)
    book = add(
        book,
        side,
        Decimal("0.0125"),
        Decimal("0.0125") * Decimal("41000.10"),
        Decimal("0.0125") * Decimal("41000.10") * FEE,
    )
    book, first = reduce(
        book, Decimal("0.01875"), Decimal("42000.33"), Decimal("0.01875") * Decimal("42000.33") * FEE
    )
    book, second = reduce(
        book, Decimal("0.005625"), Decimal("39999.99"), Decimal("0.005625") * Decimal("39999.99") * FEE
    )
    assert position["size"] == book.size == Decimal("0.013125")
    assert position["entry_price"] == book.entry_price
    assert position["realized_pnl"] == book.realized_pnl == first + second
    assert position["fees_paid"] == book.fees_paid
    assert [t["side"] for t in trades] == ["BUY", "BUY", "SELL", "SELL"]
    assert [t["realized_pnl"] for t in trades] == [None, None, first, second]
    # Cash plus what the open part cost is the starting balance plus realised PnL less fees, exactly.
    assert balance + book.cost_basis == Decimal(10000) + book.realized_pnl - book.fees_paid


async def test_update_stop_and_target_and_refuse_the_wrong_side(db: psycopg.Connection[Any]) -> None:
    async with trading_env(db) as env:
        signal_id = env.new_signal()
        await env.executor.execute(
            env.context(signal_id), decision(D.OPEN_LONG, stop_loss="39000", take_profit="42000")
        )
        await env.executor.execute(
            env.context(signal_id), decision(D.UPDATE_STOP_LOSS, new_stop_loss="39500.5")
        )
        await env.executor.execute(
            env.context(signal_id), decision(D.UPDATE_TAKE_PROFIT, new_take_profit="43000")
        )
        await env.executor.execute(
            env.context(signal_id), decision(D.UPDATE_STOP_LOSS, new_stop_loss="40500")
        )
        position = env.row("select stop_loss, take_profit from positions where signal_id = %s", signal_id)
        signal = env.row("select status, last_refusal from signals where id = %s", signal_id)
    assert (position["stop_loss"], position["take_profit"]) == (Decimal("39500.5"), Decimal(43000))
    assert signal["status"] == "position_open"
    assert "stop-loss 40500 must be below the price 40000" in signal["last_refusal"]


async def test_flip_closes_then_opens_the_other_side_on_the_same_signal(db: psycopg.Connection[Any]) -> None:
    async with trading_env(db) as env:
        signal_id = env.new_signal()
        await env.executor.execute(
            env.context(signal_id), decision(D.OPEN_LONG, stop_loss="39000", take_profit="42000")
        )
        env.set_price("BTCUSDT", Decimal(39500))
        await env.executor.execute(
            env.context(signal_id), decision(D.FLIP_POSITION, stop_loss="40500", take_profit="37000")
        )
        positions = env.rows(
            "select side, status, close_reason, stop_loss from positions where signal_id = %s"
            " order by opened_at",
            signal_id,
        )
        signal = env.row("select status from signals where id = %s", signal_id)
    assert [(p["side"], p["status"], p["close_reason"]) for p in positions] == [
        ("long", "closed", "flip"),
        ("short", "open", None),
    ]
    assert positions[1]["stop_loss"] == Decimal(40500)
    assert signal["status"] == "position_open"


async def test_a_retried_decision_acts_once(db: psycopg.Connection[Any]) -> None:
    async with trading_env(db) as env:
        signal_id = env.new_signal()
        context = env.context(signal_id)
        entry = decision(D.OPEN_LONG, stop_loss="39000", take_profit="42000")
        await env.executor.execute(context, entry)
        await env.executor.execute(context, entry)
        close_context = env.context(signal_id)
        await env.executor.execute(close_context, decision(D.CLOSE))
        await env.executor.execute(close_context, decision(D.CLOSE))
        trades = env.rows("select side from trades where signal_id = %s", signal_id)
        signal = env.row("select last_refusal from signals where id = %s", signal_id)
    assert sorted(t["side"] for t in trades) == ["BUY", "SELL"]
    assert signal["last_refusal"] is None


async def test_a_restarted_executor_resumes_from_the_database(db: psycopg.Connection[Any]) -> None:
    async with trading_env(db) as env:
        signal_id = env.new_signal()
        await env.executor.execute(
            env.context(signal_id), decision(D.OPEN_LONG, stop_loss="39000", take_profit="42000")
        )
        before = env.positions.for_signal(signal_id)
        assert before is not None
    async with trading_env(db, user=env.user) as fresh:
        report = await fresh.trading.recovery.run()
        after = fresh.positions.for_signal(signal_id)
    assert report.open_positions >= 1
    assert after is not None and after.book == before.book


def position_side(value: str) -> PositionSide:
    return PositionSide(value)
