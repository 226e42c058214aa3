"""The signal run end to end: simulator streams -> scheduler -> sandbox -> signals rows -> analyze-signal
(Gemini stand-in) -> executor, against the local stack; and every way a signal can fail to get a decision."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg.rows import dict_row

from devstack.stack import DevStack
from tests.factories import MachineUser
from tests.worker.sandbox.hostile import SNIPPETS, Outcome
from tests.worker.signals.conftest import FaultyNetwork
from tests.worker.signals.harness import (
    ALWAYS,
    NEVER,
    SYMBOLS,
    insert_trader,
    running_engine,
    signal_rows,
    trader_row,
    until,
)
from worker.components import ComponentState
from worker.domain.enums import AnalysisDecision
from worker.signals.analysis import AnalysisSettings
from worker.signals.engine import EngineSettings

RUNAWAY = "def check_signal(symbol, ticker, klines):\n    while True:\n        pass\n"
IMPORTS = "import os\n\ndef check_signal(symbol, ticker, klines):\n    return False\n"


def analysis_rows(db: psycopg.Connection[Any], trader_id: object) -> list[dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(
            "select id, signal_id, decision::text, market_data from public.analysis_history"
            " where trader_id = %s",
            (trader_id,),
        ).fetchall()


async def test_matches_become_signals_analysed_once_and_handed_to_the_executor(
    stack: DevStack, db: psycopg.Connection[Any], machine: MachineUser
) -> None:
    trader = insert_trader(db, machine.user, ALWAYS, timeframes=("1m", "5m"))
    no_cooldown = EngineSettings(default_symbols=SYMBOLS, cooldown_secs=0)

    async with running_engine(stack, machine.user, machine.machine_id, engine_settings=no_cooldown) as parts:
        await parts.scheduler.add(trader)
        await until(lambda: len(parts.executor.executed) == 2, 30)
        runs_then = len(parts.scheduler.recent_runs)
        await until(lambda: len(parts.scheduler.recent_runs) >= runs_then + 3)  # matches go on
        metrics = parts.metrics.traders[str(trader.id)]

    signals = {row["id"]: row for row in signal_rows(db, trader.id)}
    analyses = {row["signal_id"]: row for row in analysis_rows(db, trader.id)}
    assert sorted(row["symbol"] for row in signals.values()) == sorted(SYMBOLS)
    assert all(row["status"] == "new" for row in signals.values())  # the recording executor leaves them
    assert set(analyses) == set(signals)
    for context, decision in parts.executor.executed:
        row, analysis = signals[context.signal_id], analyses[context.signal_id]
        assert (context.symbol, context.trigger_price) == (row["symbol"], row["trigger_price"])
        assert context.trader.id == trader.id
        assert context.analysis_id == analysis["id"]
        assert decision.decision is AnalysisDecision(analysis["decision"])
        sent = analysis["market_data"]
        assert sent["ticker"]["lastPrice"] == float(row["trigger_price"])
        assert {"rsi_14_1m", "macd_1m", "ema_20_5m", "atr_14_5m"} <= set(sent["indicators"])
        assert set(sent["lastCandles"]) == {"1m", "5m"}
    assert (metrics.signals_created, metrics.analyses, metrics.analysis_failures) == (2, 2, 0)
    assert metrics.already_live >= 2  # later matches while the signals are live: no second signal
    assert metrics.checks >= 2 * metrics.runs - 2 and metrics.errors == 0


async def test_a_cooldown_holds_across_closed_signals_and_restarts(
    stack: DevStack, db: psycopg.Connection[Any], machine: MachineUser
) -> None:
    trader = insert_trader(db, machine.user, ALWAYS)
    settings = EngineSettings(default_symbols=SYMBOLS, cooldown_secs=3600)

    async with running_engine(stack, machine.user, machine.machine_id, engine_settings=settings) as parts:
        await parts.scheduler.add(trader)
        await until(lambda: len(parts.executor.executed) == 2, 30)
        db.execute(
            "update public.signals set status = 'closed', closed_at = now() where trader_id = %s",
            (trader.id,),
        )
        runs_then = len(parts.scheduler.recent_runs)
        await until(lambda: len(parts.scheduler.recent_runs) >= runs_then + 3)
        first_cooldowns = parts.metrics.traders[str(trader.id)].cooldown_skipped
    # A restarted worker remembers the signals of the last cooldown window from the database.
    async with running_engine(stack, machine.user, machine.machine_id, engine_settings=settings) as again:
        await again.scheduler.add(trader)
        await until(lambda: again.metrics.trader(str(trader.id)).cooldown_skipped >= 4, 30)

    assert first_cooldowns >= 2
    assert len(signal_rows(db, trader.id)) == 2
    assert again.executor.executed == []


async def test_a_failed_analysis_closes_its_signal_with_the_reason(
    stack: DevStack, db: psycopg.Connection[Any], machine: MachineUser
) -> None:
    trader = insert_trader(db, machine.user, ALWAYS)
    db.execute(
        "insert into public.ai_usage_daily (user_id, usage_date, prompt_tokens) values"
        " (%s, (now() at time zone 'utc')::date, 1000000)",
        (machine.user.id,),
    )

    async with running_engine(stack, machine.user, machine.machine_id) as parts:
        await parts.scheduler.add(trader)
        await until(lambda: parts.metrics.trader(str(trader.id)).analysis_failures == 2, 30)
        await until(lambda: all(r["status"] == "closed" for r in signal_rows(db, trader.id)), 10)
        runs_then = len(parts.scheduler.recent_runs)
        await until(lambda: len(parts.scheduler.recent_runs) >= runs_then + 2)

    rows = signal_rows(db, trader.id)
    assert len(rows) == 2  # the freed symbols are not signalled again within the cooldown
    assert all(row["close_reason"].startswith("analysis failed (budget_exhausted): ") for row in rows)
    assert parts.executor.executed == []
    # Each failure is counted towards the trader's safe mode.
    assert [trader_id for trader_id, _ in parts.executor.analysis_failures] == [trader.id, trader.id]


async def test_a_trader_paused_mid_analysis_gets_its_signal_closed_not_executed(
    stack: DevStack, db: psycopg.Connection[Any], machine: MachineUser, faulty_network: FaultyNetwork
) -> None:
    trader = insert_trader(db, machine.user, ALWAYS)
    faulty_network.always = {"delay_secs": 2.0}
    analysis = AnalysisSettings(functions_url=faulty_network.url)

    async with running_engine(stack, machine.user, machine.machine_id, analysis_settings=analysis) as parts:
        await parts.scheduler.add(trader)
        await until(lambda: len(signal_rows(db, trader.id)) == 2, 30)
        await parts.scheduler.pause(trader)
        await until(lambda: all(r["status"] == "closed" for r in signal_rows(db, trader.id)), 10)

    reasons = {row["close_reason"] for row in signal_rows(db, trader.id)}
    assert reasons == {"trader stopped before its decision was applied"}
    assert parts.executor.executed == []
    assert len(analysis_rows(db, trader.id)) == 2  # the model did answer; the decision was not applied


async def test_signals_left_new_by_a_previous_run_are_closed_at_start(
    stack: DevStack, db: psycopg.Connection[Any], machine: MachineUser
) -> None:
    trader = insert_trader(db, machine.user, NEVER)
    db.execute(
        "insert into public.signals (trader_id, user_id, symbol, status, trigger_price) values"
        " (%s, %s, 'BTCUSDT', 'new', 1), (%s, %s, 'ETHUSDT', 'watching', 1)",
        (trader.id, machine.user.id, trader.id, machine.user.id),
    )

    async with running_engine(stack, machine.user, machine.machine_id):
        await until(lambda: any(r["status"] == "closed" for r in signal_rows(db, trader.id)), 10)

    by_symbol = {row["symbol"]: row for row in signal_rows(db, trader.id)}
    assert by_symbol["BTCUSDT"]["status"] == "closed"
    assert (
        by_symbol["BTCUSDT"]["close_reason"] == "stranded: the worker restarted before a decision was applied"
    )
    assert by_symbol["ETHUSDT"]["status"] == "watching"


async def test_broken_traders_are_stopped_while_others_keep_producing_signals(
    stack: DevStack, db: psycopg.Connection[Any], machine: MachineUser
) -> None:
    runaway = insert_trader(db, machine.user, RUNAWAY, name="runaway")
    rejected = insert_trader(db, machine.user, IMPORTS, name="imports")
    good = insert_trader(db, machine.user, ALWAYS, name="good")

    async with running_engine(stack, machine.user, machine.machine_id) as parts:
        for trader in (runaway, rejected, good):
            await parts.scheduler.add(trader)
        jobs = parts.scheduler.job_ids()
        await until(lambda: trader_row(db, runaway.id)["status"] == "error", 30)
        await until(lambda: len(parts.executor.executed) == 2, 30)
        good_runs = len([r for r in parts.scheduler.recent_runs if r.trader_id == good.id])
        await until(
            lambda: len([r for r in parts.scheduler.recent_runs if r.trader_id == good.id]) > good_runs
        )
        state = parts.engine.state()

    rejected_row, runaway_row = trader_row(db, rejected.id), trader_row(db, runaway.id)
    assert rejected_row["status"] == "error" and "line 1" in rejected_row["error_message"]
    assert not any(str(rejected.id) in job for job in jobs)  # never scheduled
    assert "deadline" in runaway_row["error_message"] or "CPU" in runaway_row["error_message"]
    assert signal_rows(db, runaway.id) == []
    assert sorted(r["symbol"] for r in signal_rows(db, good.id)) == sorted(SYMBOLS)
    assert state is ComponentState.RUNNING


async def test_symbols_without_fresh_data_are_skipped_and_counted(
    stack: DevStack, db: psycopg.Connection[Any], machine: MachineUser
) -> None:
    trader = insert_trader(db, machine.user, ALWAYS, symbols=("BTCUSDT", "XRPUSDT"))

    async with running_engine(stack, machine.user, machine.machine_id) as parts:
        await parts.scheduler.add(trader)
        await until(lambda: len(parts.executor.executed) == 1, 30)
        await asyncio.sleep(1.5)
        metrics = parts.metrics.traders[str(trader.id)]
        runs = [r for r in parts.scheduler.recent_runs if r.trader_id == trader.id]

    assert [row["symbol"] for row in signal_rows(db, trader.id)] == ["BTCUSDT"]
    assert all("XRPUSDT" in run.stale for run in runs)
    assert metrics.stale_symbols >= len(runs)


async def test_the_hostile_corpus_scheduled_next_to_a_good_trader_leaves_the_worker_signalling(
    stack: DevStack, db: psycopg.Connection[Any], machine: MachineUser
) -> None:
    hostile = [
        (snippet, insert_trader(db, machine.user, snippet.code, name=snippet.name)) for snippet in SNIPPETS
    ]
    good = insert_trader(db, machine.user, ALWAYS, name="good")
    must_stop = [t for s, t in hostile if s.outcome in (Outcome.REJECTED, Outcome.STOPPED)]
    fails = [t for s, t in hostile if s.outcome is Outcome.FAILS]

    async with running_engine(stack, machine.user, machine.machine_id) as parts:
        for _, trader in hostile:
            await parts.scheduler.add(trader)
        await parts.scheduler.add(good)
        await until(lambda: all(trader_row(db, t.id)["status"] == "error" for t in must_stop), 60)
        await until(lambda: len(parts.executor.executed) == 2, 30)
        good_runs = len([r for r in parts.scheduler.recent_runs if r.trader_id == good.id])
        await until(
            lambda: len([r for r in parts.scheduler.recent_runs if r.trader_id == good.id]) > good_runs
        )
        state, pool_size = parts.engine.state(), parts.pool.stats().processes
        fail_metrics = [parts.metrics.trader(str(t.id)) for t in fails]

    assert len(hostile) >= 40
    assert all(trader_row(db, t.id)["error_message"] for t in must_stop)
    assert all(m.errors >= 1 and m.signals_created == 0 for m in fail_metrics)
    assert all(signal_rows(db, t.id) == [] for _, t in hostile)
    assert sorted(r["symbol"] for r in signal_rows(db, good.id)) == sorted(SYMBOLS)
    assert (state, pool_size) == (ComponentState.RUNNING, 2)
