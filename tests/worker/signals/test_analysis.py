"""analyze-signal through the worker's client: the real function (Gemini stand-in behind it), with a
faulty network in front of it for 429/5xx answers and lost replies."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from devstack import keys
from devstack.stack import DevStack
from tests.factories import MachineUser, create_trader
from tests.worker.sandbox import recorded
from tests.worker.signals.conftest import FaultyNetwork
from worker.db.client import MachineAuth
from worker.market.messages import Ticker
from worker.retry import Backoff
from worker.signals.analysis import (
    AnalysisBudget,
    AnalysisClient,
    AnalysisFailed,
    AnalysisSettings,
    FailureKind,
)
from worker.signals.market_data import build_market_data, signal_ticker


def btc_market_data() -> dict[str, Any]:
    klines = recorded.window(recorded.load("BTCUSDT", "1h"), 5000, 300)
    last = Decimal(str(klines.close[-1]))
    ticker = Ticker(
        "BTCUSDT", last, last, last * Decimal("1.02"), last * Decimal("0.97"), Decimal("-12.5"),
        Decimal("-0.4"), last, last, Decimal("25000.5"), Decimal("2.4e9"), 1,
    )  # fmt: skip
    return build_market_data("BTCUSDT", ticker, {"1h": klines}, datetime.now(UTC))


def new_signal(db: psycopg.Connection[Any], machine: MachineUser) -> tuple[uuid.UUID, uuid.UUID]:
    trader_id = create_trader(db, machine.user)
    signal_id = uuid.uuid4()
    db.execute(
        "insert into public.signals (id, trader_id, user_id, symbol, trigger_price) values (%s, %s, %s,"
        " 'BTCUSDT', 1)",
        (signal_id, trader_id, machine.user.id),
    )
    return trader_id, signal_id


def client(base_url: str, machine: MachineUser, **overrides: Any) -> AnalysisClient:
    settings = AnalysisSettings(
        functions_url=base_url, backoff=Backoff(base_secs=0.05, max_secs=0.2), **overrides
    )
    return AnalysisClient(settings, MachineAuth(keys.ANON_KEY, machine.token))


def analyses(db: psycopg.Connection[Any], signal_id: uuid.UUID) -> list[tuple[Any, ...]]:
    return db.execute(
        "select id, decision::text from public.analysis_history where signal_id = %s", (signal_id,)
    ).fetchall()


def test_the_ticker_signal_code_sees_carries_the_contracts_fields() -> None:
    ticker = Ticker(
        "ETHUSDT", Decimal("3300.5"), Decimal(3200), Decimal(3400), Decimal(3100), Decimal("100.5"),
        Decimal("3.14"), Decimal("3300.4"), Decimal("3300.6"), Decimal(12345), Decimal(40_000_000), 7,
    )  # fmt: skip

    fields = signal_ticker(ticker)

    assert fields["lastPrice"] == 3300.5
    assert fields["volume24h"] == 12345.0
    assert fields["priceChange24h"] == 3.14  # percent
    assert fields["priceChangeAbs24h"] == 100.5


async def test_an_analysis_returns_the_functions_decision_recorded_under_our_request_id(
    stack: DevStack, db: psycopg.Connection[Any], machine: MachineUser
) -> None:
    trader_id, signal_id = new_signal(db, machine)
    analysis_client = client(f"{stack.config.api_url}/functions/v1", machine)
    try:
        result = await analysis_client.analyze(trader_id, signal_id, btc_market_data())
    finally:
        await analysis_client.aclose()

    assert (result.attempts, result.replayed) == (1, False)
    assert analyses(db, signal_id) == [(result.request_id, result.decision.decision.value)]
    assert result.analysis_id == result.request_id


async def test_429_and_5xx_are_retried_with_the_same_request_id_honouring_retry_after(
    db: psycopg.Connection[Any], machine: MachineUser, faulty_network: FaultyNetwork
) -> None:
    trader_id, signal_id = new_signal(db, machine)
    faulty_network.faults = [{"status": 503}, {"status": 429, "retry_after": 1}, {"status": 502}]
    analysis_client = client(faulty_network.url, machine)
    started = time.monotonic()
    try:
        result = await analysis_client.analyze(trader_id, signal_id, btc_market_data())
    finally:
        await analysis_client.aclose()

    assert result.attempts == 4
    assert time.monotonic() - started >= 1.0
    assert {body["requestId"] for body in faulty_network.bodies} == {str(result.request_id)}
    assert len(analyses(db, signal_id)) == 1


async def test_a_lost_reply_is_retried_and_replayed_without_a_second_model_call(
    db: psycopg.Connection[Any], machine: MachineUser, faulty_network: FaultyNetwork
) -> None:
    trader_id, signal_id = new_signal(db, machine)
    # The first request reaches the function, which records its decision; the reply comes too late.
    faulty_network.faults = [{"delay_secs": 3.0}]
    analysis_client = client(faulty_network.url, machine, attempt_timeout_secs=1.5)
    try:
        result = await analysis_client.analyze(trader_id, signal_id, btc_market_data())
    finally:
        await analysis_client.aclose()

    assert (result.attempts, result.replayed) == (2, True)
    assert len(faulty_network.bodies) == 2
    assert analyses(db, signal_id) == [(result.request_id, result.decision.decision.value)]


async def test_a_used_up_daily_budget_fails_at_once(
    db: psycopg.Connection[Any], machine: MachineUser, faulty_network: FaultyNetwork
) -> None:
    trader_id, signal_id = new_signal(db, machine)
    db.execute(
        "insert into public.ai_usage_daily (user_id, usage_date, prompt_tokens) values"
        " (%s, (now() at time zone 'utc')::date, 1000000)",
        (machine.user.id,),
    )
    analysis_client = client(faulty_network.url, machine)
    try:
        with pytest.raises(AnalysisFailed) as failure:
            await analysis_client.analyze(trader_id, signal_id, btc_market_data())
    finally:
        await analysis_client.aclose()

    assert failure.value.kind is FailureKind.BUDGET
    assert failure.value.status == 429
    assert "budget_exhausted" in str(failure.value)
    assert len(faulty_network.bodies) == 1
    assert analyses(db, signal_id) == []


async def test_a_refusal_is_not_retried(
    db: psycopg.Connection[Any], machine: MachineUser, faulty_network: FaultyNetwork
) -> None:
    trader_id, _ = new_signal(db, machine)
    analysis_client = client(faulty_network.url, machine)
    try:
        with pytest.raises(AnalysisFailed) as failure:
            await analysis_client.analyze(trader_id, uuid.uuid4(), btc_market_data())
    finally:
        await analysis_client.aclose()

    assert (failure.value.kind, failure.value.status) == (FailureKind.REFUSED, 404)
    assert "signal_not_found" in str(failure.value)
    assert len(faulty_network.bodies) == 1


async def test_an_unavailable_function_gives_up_within_the_deadline(
    db: psycopg.Connection[Any], machine: MachineUser, faulty_network: FaultyNetwork
) -> None:
    trader_id, signal_id = new_signal(db, machine)
    faulty_network.always = {"status": 503}
    analysis_client = client(faulty_network.url, machine, deadline_secs=1.5, max_attempts=50)
    started = time.monotonic()
    try:
        with pytest.raises(AnalysisFailed) as failure:
            await analysis_client.analyze(trader_id, signal_id, btc_market_data())
    finally:
        await analysis_client.aclose()

    assert failure.value.kind is FailureKind.UNAVAILABLE
    assert "HTTP 503" in str(failure.value)
    assert time.monotonic() - started < 2.0
    assert len(faulty_network.bodies) >= 3
    assert len({body["requestId"] for body in faulty_network.bodies}) == 1


def test_the_budget_allows_so_many_analyses_per_trader_in_any_rolling_hour() -> None:
    now = [0.0]
    budget = AnalysisBudget(3, monotonic=lambda: now[0])

    first = [budget.try_spend("a") for _ in range(4)]
    other_trader = budget.try_spend("b")
    now[0] = 3599.0
    still_full = budget.try_spend("a")
    now[0] = 3600.5
    refilled = budget.try_spend("a")

    assert first == [True, True, True, False]
    assert (other_trader, still_full, refilled) == (True, False, True)
