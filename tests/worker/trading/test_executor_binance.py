"""Real mode against the devstack Binance simulator (python-binance AsyncClient, signed REST, OCO) with
state in the local stack: every decision, exchange-side protection, stop moves, timeouts, exchange fills."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from devstack.exchange.data import default_data_dir
from devstack.exchange.server import SimulatorConfig
from tests.worker.trading.exchange import START_MS, FaultySimulator
from tests.worker.trading.helpers import TradingEnv, decision, trading_env
from worker.domain.enums import AnalysisDecision as D
from worker.errors import ConfigError
from worker.market.recordings import load_directory
from worker.trading.binance_venue import BinanceVenue
from worker.trading.config import TradingConfig

START_BALANCES = {"USDT": Decimal(10000), "BTC": Decimal("0.1")}


@pytest_asyncio.fixture(loop_scope="function")
async def simulator() -> AsyncIterator[FaultySimulator]:
    sim = FaultySimulator(
        SimulatorConfig(start_ms=START_MS, paused=True), load_directory(default_data_dir(), {"BTCUSDT"})
    )
    await sim.start()
    yield sim
    await sim.stop()


@pytest_asyncio.fixture(loop_scope="function")
async def real(simulator: FaultySimulator, db: psycopg.Connection[Any]) -> AsyncIterator[TradingEnv]:
    account = simulator.engine.create_account(dict(START_BALANCES))
    venue = BinanceVenue(
        simulator.url, account.api_key, account.secret, request_timeout_secs=1.0, settle_secs=0.05
    )
    await venue.start()
    try:
        async with trading_env(db, venue=venue, config=TradingConfig(), risk=(1000, 3, 500)) as env:
            env.set_price("BTCUSDT", simulator.price())
            env.api_key = account.api_key  # type: ignore[attr-defined]
            yield env
    finally:
        await venue.aclose()


def levels(price: Decimal, below: str, above: str) -> dict[str, str]:
    return {"stop_loss": str((price * Decimal(below)).quantize(Decimal("0.01"))),
            "take_profit": str((price * Decimal(above)).quantize(Decimal("0.01")))}  # fmt: skip


async def test_open_long_rests_an_oco_and_records_every_order(
    real: TradingEnv, simulator: FaultySimulator
) -> None:
    price = simulator.price()
    signal_id = real.new_signal(price=price)
    await real.executor.execute(
        real.context(signal_id), decision(D.OPEN_LONG, **levels(price, "0.98", "1.03"))
    )
    position = real.row("select * from positions where signal_id = %s", signal_id)
    trades = real.rows("select * from trades where signal_id = %s order by executed_at", signal_id)
    open_orders = simulator.engine.open_orders(simulator.account(real.api_key), "BTCUSDT")  # type: ignore[attr-defined]
    assert position["type"] == "real" and position["status"] == "open"
    entry = next(t for t in trades if t["order_type"] == "MARKET")
    assert entry["status"] == "filled" and entry["binance_order_id"] is not None
    exchange_entry = simulator.orders_with(entry["client_order_id"])
    assert len(exchange_entry) == 1 and exchange_entry[0].status == "FILLED"
    # Binance takes a BUY's fee from the BTC bought: the position holds what the account received.
    assert position["size"] == exchange_entry[0].executed_qty - Decimal(
        exchange_entry[0].fills[0]["commission"]
    )
    protective = {t["client_order_id"]: t for t in trades if t["order_type"] != "MARKET"}
    assert {o.client_order_id for o in open_orders} == set(protective)
    assert all(t["status"] == "pending" and t["binance_order_id"] for t in protective.values())
    assert position["stop_loss_order_id"] is not None and position["take_profit_order_id"] is not None


async def test_every_decision_keeps_exchange_and_database_consistent(
    real: TradingEnv, simulator: FaultySimulator
) -> None:
    price = simulator.price()
    signal_id = real.new_signal(price=price)
    execute = real.executor.execute
    await execute(
        real.context(signal_id), decision(D.OPEN_LONG, position_size="0.5", **levels(price, "0.98", "1.03"))
    )
    await execute(real.context(signal_id), decision(D.SCALE_IN, scale_in_amount="0.5"))
    await execute(real.context(signal_id), decision(D.PARTIAL_CLOSE, close_percentage="0.5"))
    await execute(real.context(signal_id), decision(D.SCALE_OUT, scale_out_percentage="0.3"))
    await execute(
        real.context(signal_id),
        decision(
            D.UPDATE_TAKE_PROFIT, new_take_profit=str((price * Decimal("1.05")).quantize(Decimal("0.01")))
        ),
    )
    await execute(
        real.context(signal_id),
        decision(D.UPDATE_STOP_LOSS, new_stop_loss=str((price * Decimal("0.99")).quantize(Decimal("0.01")))),
    )
    await execute(real.context(signal_id), decision(D.FLIP_POSITION, **levels(price, "1.02", "0.97")))
    account = simulator.account(real.api_key)  # type: ignore[attr-defined]
    flipped = real.row("select * from positions where signal_id = %s and status = 'open'", signal_id)
    assert flipped["side"] == "short"
    assert {o.client_order_id for o in simulator.engine.open_orders(account, "BTCUSDT")} == set(
        r["client_order_id"] for r in real.rows(
            "select client_order_id from trades where position_id = %s and status = 'pending'", flipped["id"])
    )  # fmt: skip
    await execute(real.context(signal_id), decision(D.CLOSE))
    assert simulator.engine.open_orders(account, "BTCUSDT") == []
    assert real.row("select status from signals where id = %s", signal_id)["status"] == "closed"
    # The exchange's BTC moved exactly as the filled trades say (BUYs net of their BTC fee, SELLs in full).
    filled = real.rows(
        "select side, quantity, fee, fee_asset from trades where signal_id = %s and status = 'filled'",
        signal_id,
    )
    moved = sum(
        (t["quantity"] - (t["fee"] if t["fee_asset"] == "BTC" else 0)) * (1 if t["side"] == "BUY" else -1)
        for t in filled
    )
    balance = account.balance("BTC")
    assert balance.free + balance.locked - START_BALANCES["BTC"] == moved
    assert real.rows("select id from trades where signal_id = %s and status = 'pending'", signal_id) == []


async def test_a_reply_lost_after_the_exchange_accepted_gives_exactly_one_fill(
    real: TradingEnv, simulator: FaultySimulator
) -> None:
    price = simulator.price()
    signal_id = real.new_signal(price=price)
    simulator.trading_faults.late_reply_secs = 2.0  # the client gives up after 1 s
    await real.executor.execute(
        real.context(signal_id), decision(D.OPEN_LONG, **levels(price, "0.98", "1.03"))
    )
    entry = real.row("select * from trades where signal_id = %s and order_type = 'MARKET'", signal_id)
    on_exchange = simulator.orders_with(entry["client_order_id"])
    assert len(on_exchange) == 1 and on_exchange[0].status == "FILLED"
    assert entry["status"] == "filled" and entry["binance_order_id"] == on_exchange[0].order_id
    assert len(real.rows("select id from positions where signal_id = %s", signal_id)) == 1


async def test_a_stop_that_cannot_be_placed_closes_the_position_at_market(
    real: TradingEnv, simulator: FaultySimulator
) -> None:
    price = simulator.price()
    signal_id = real.new_signal(price=price)
    await real.executor.execute(
        real.context(signal_id), decision(D.OPEN_LONG, **levels(price, "0.98", "1.03"))
    )
    simulator.trading_faults.refuse_oco = True
    await real.executor.execute(
        real.context(signal_id),
        decision(D.UPDATE_STOP_LOSS, new_stop_loss=str((price * Decimal("0.99")).quantize(Decimal("0.01")))),
    )
    position = real.row("select * from positions where signal_id = %s", signal_id)
    signal = real.row("select status, last_refusal from signals where id = %s", signal_id)
    failed = real.rows(
        "select error_message from trades where signal_id = %s and status = 'failed'", signal_id
    )
    assert position["status"] == "closed" and position["close_reason"] == "protection_failed"
    assert signal["status"] == "closed" and "protection could not be placed" in signal["last_refusal"]
    assert failed and all("Order would trigger immediately" in f["error_message"] for f in failed)
    assert simulator.engine.open_orders(simulator.account(real.api_key), "BTCUSDT") == []  # type: ignore[attr-defined]


async def test_an_exchange_side_stop_fill_is_recorded_once(
    real: TradingEnv, simulator: FaultySimulator
) -> None:
    price = simulator.price()
    signal_id = real.new_signal(price=price)
    await real.executor.execute(
        real.context(signal_id), decision(D.OPEN_LONG, **levels(price, "0.998", "1.002"))
    )
    simulator.clock.advance_ms(6 * 3_600_000)  # hours of replayed market: one of the legs fills
    assert await real.trading.protector.reconcile_exchange_exits() == 1
    assert await real.trading.protector.reconcile_exchange_exits() == 0
    position = real.row("select * from positions where signal_id = %s", signal_id)
    exits = real.rows(
        "select order_type, status from trades where position_id = %s and side = 'SELL'", position["id"]
    )
    assert position["status"] == "closed" and position["close_reason"] in ("stop_loss", "take_profit")
    assert sorted((e["order_type"], e["status"]) for e in exits) in (
        [("STOP_LOSS_LIMIT", "filled"), ("TAKE_PROFIT_LIMIT", "cancelled")],
        [("STOP_LOSS_LIMIT", "cancelled"), ("TAKE_PROFIT_LIMIT", "filled")],
    )
    assert not any(e["order_type"] == "MARKET" for e in exits)


@pytest.mark.parametrize("unused", [None])
def test_levels_helper_rounds_to_cents(unused: None) -> None:
    assert levels(Decimal("100"), "0.98", "1.03") == {"stop_loss": "98.00", "take_profit": "103.00"}


async def test_a_key_the_exchange_refuses_stops_start_up_as_a_config_error(
    simulator: FaultySimulator,
) -> None:
    venue = BinanceVenue(simulator.url, "unknownkey" * 4, "unknownsecret" * 3, request_timeout_secs=1.0)
    try:
        with pytest.raises(ConfigError, match=r"Binance refused the API key \(-2015"):
            await venue.start()
    finally:
        await venue.aclose()
