"""Guardrails refuse what they should, in code, and every refusal is recorded on the signal."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import psycopg

from tests.factories import create_trader, create_user, delete_user, trade_for_real
from tests.worker.trading.helpers import decision, trader_of, trading_env
from worker.domain.enums import AnalysisDecision as D
from worker.domain.enums import TradingMode
from worker.trading.config import TradingConfig
from worker.trading.guardrails import check_mode

LONG = {"stop_loss": "39000", "take_profit": "42000"}


async def test_max_open_positions_and_one_position_per_symbol(db: psycopg.Connection[Any]) -> None:
    async with trading_env(db, risk=(100, 1, 500)) as env:
        first = env.new_signal("BTCUSDT")
        await env.executor.execute(env.context(first), decision(D.OPEN_LONG, **LONG))
        second = env.new_signal("ETHUSDT", Decimal(2000))
        await env.executor.execute(
            env.context(second, "ETHUSDT"), decision(D.OPEN_LONG, stop_loss="1900", take_profit="2200")
        )
        refused = env.row("select status, close_reason, last_refusal from signals where id = %s", second)
    assert refused["status"] == "closed"
    assert refused["last_refusal"].startswith("refused (max_open_positions)")
    assert refused["close_reason"] == refused["last_refusal"]
    assert env.rows("select id from positions where signal_id = %s", second) == []


async def test_position_size_is_clamped_to_the_traders_max(db: psycopg.Connection[Any]) -> None:
    async with trading_env(db, risk=(250, 3, 500)) as env:
        signal_id = env.new_signal()
        # No positionSize: 10 % of the 10,000 balance would be 1,000 USD; the trader allows 250.
        await env.executor.execute(env.context(signal_id), decision(D.OPEN_LONG, **LONG))
        position = env.row("select size, entry_price from positions where signal_id = %s", signal_id)
    assert position["size"] * position["entry_price"] == Decimal(250)


async def test_cooldown_after_a_close_refuses_a_new_entry_on_that_symbol(db: psycopg.Connection[Any]) -> None:
    async with trading_env(
        db, config=TradingConfig(paper_slippage_rate=Decimal(0), symbol_cooldown_secs=600)
    ) as env:
        first = env.new_signal()
        await env.executor.execute(env.context(first), decision(D.OPEN_LONG, **LONG))
        await env.executor.execute(env.context(first), decision(D.CLOSE))
        again = env.new_signal()
        await env.executor.execute(env.context(again), decision(D.OPEN_LONG, **LONG))
        row = env.row("select status, last_refusal from signals where id = %s", again)
    assert row["status"] == "closed" and row["last_refusal"].startswith("refused (symbol_cooldown)")


async def test_daily_loss_limit_stops_new_entries(db: psycopg.Connection[Any]) -> None:
    config = TradingConfig(paper_slippage_rate=Decimal(0), symbol_cooldown_secs=0)
    async with trading_env(db, config=config, risk=(1000, 3, 20)) as env:
        loser = env.new_signal()
        await env.executor.execute(env.context(loser), decision(D.OPEN_LONG, position_size="1", **LONG))
        env.set_price("BTCUSDT", Decimal(39000))  # -2.5 % of 1,000 USD: a 25 USD loss plus fees
        await env.executor.execute(env.context(loser), decision(D.CLOSE))
        env.set_price("BTCUSDT", Decimal(39500))
        next_signal = env.new_signal("ETHUSDT", Decimal(2000))
        await env.executor.execute(
            env.context(next_signal, "ETHUSDT"), decision(D.OPEN_LONG, stop_loss="1900", take_profit="2200")
        )
        row = env.row("select last_refusal from signals where id = %s", next_signal)
    assert row["last_refusal"].startswith("refused (daily_loss_limit)")


async def test_safe_mode_after_three_ai_failures_blocks_entries_but_not_exits(
    db: psycopg.Connection[Any],
) -> None:
    async with trading_env(db) as env:
        held = env.new_signal("ETHUSDT", Decimal(2000))
        await env.executor.execute(
            env.context(held, "ETHUSDT"), decision(D.OPEN_LONG, stop_loss="1900", take_profit="2200")
        )
        for _ in range(3):
            env.executor.record_analysis_failure(env.trader.id, "model unavailable")
        assert env.guardrails.in_safe_mode(env.trader.id)
        # Entries are refused while failures continue (the guardrail checks before anything is sent).
        fresh = env.new_signal()
        context = env.context(fresh)
        env.guardrails.record_analysis_failure(env.trader.id)
        refusal = env.guardrails.check_entry(
            env.trader, "BTCUSDT", env.positions.of_trader(env.trader.id), env.clock.now()
        )
        assert refusal is not None and refusal.rule == "safe_mode"
        # A successful analysis (any decision handed to the executor) ends safe mode.
        await env.executor.execute(context, decision(D.WATCH))
        assert not env.guardrails.in_safe_mode(env.trader.id)
        # Protective exits never depend on the AI: the position is still there and closable.
        assert env.positions.for_signal(held) is not None


async def test_a_real_trader_opens_nothing_on_a_paper_machine(db: psycopg.Connection[Any]) -> None:
    async with trading_env(db) as env:
        trade_for_real(db, env.user, env.trader.id)
        real_trader = trader_of(db, env.trader.id)
        signal_id = env.new_signal()
        context = env.context(signal_id)
        await env.executor.execute(replace(context, trader=real_trader), decision(D.OPEN_LONG, **LONG))
        refused = env.row("select status, last_refusal from signals where id = %s", signal_id)
    assert real_trader.trading_mode is TradingMode.REAL
    assert refused["status"] == "closed"
    assert refused["last_refusal"] == (
        "refused (trading_mode): the trader is set to real but this machine trades on paper: "
        "restart the machine"
    )
    assert env.rows("select id from positions where signal_id = %s", signal_id) == []


def test_a_paper_trader_adds_no_exposure_on_a_real_machine(db: psycopg.Connection[Any]) -> None:
    user = create_user(db)
    try:
        paper_trader = trader_of(db, create_trader(db, user))
    finally:
        delete_user(db, user)

    refusal = check_mode(paper_trader, TradingMode.REAL)

    assert refusal is not None and refusal.rule == "trading_mode"
    assert "trades on paper but this machine trades real money" in refusal.message
    assert check_mode(paper_trader, TradingMode.PAPER) is None
