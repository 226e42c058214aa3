"""SIGKILL the trading process at each step of open / partial close / flip / stop move, restart it, and
check that the database and the exchange agree: nothing lost, nothing duplicated, positions guarded.

The exchange simulator runs in its own process (it outlives the killed one); the trading process is
tests/worker/trading/crash_driver.py, killing itself at an exact point so every step is covered."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio

from tests.factories import create_machine, create_trader, create_user, trade_for_real
from tests.worker.trading.exchange import START_MS
from tests.worker.trading.helpers import set_risk
from worker.trading.binance_venue import BinanceVenue

ROOT = Path(__file__).resolve().parents[3]
BTC_START = Decimal("0.1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def exchange() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.exchange", "--port", str(port), "--paused", "--start", str(START_MS),
         "--symbols", "BTCUSDT"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{url}/api/v3/ping", timeout=0.5).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest_asyncio.fixture(loop_scope="function")
async def account(exchange: str) -> AsyncIterator[tuple[str, str]]:
    async with httpx.AsyncClient() as client:
        body = (
            await client.post(f"{exchange}/_sim/accounts", json={"balances": {"USDT": "10000", "BTC": "0.1"}})
        ).json()
    yield body["apiKey"], body["secretKey"]


def run_driver(
    exchange: str, keys: tuple[str, str], env: dict[str, str], *, step: str, crash_at: str | None = None
) -> int:
    command = [
        sys.executable, "-m", "tests.worker.trading.crash_driver", "--exchange", exchange, "--key", keys[0],
        "--secret", keys[1], "--token", env["token"], "--signal", env["signal"],
        "--trader-row", env["trader"], "--step", step,
    ]  # fmt: skip
    if crash_at:
        command += ["--crash-at", crash_at]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode not in (0, -9):
        raise AssertionError(f"driver failed ({done.returncode}): {done.stderr[-3000:]}")
    return done.returncode


def rows(db: psycopg.Connection[Any], sql: str, *args: object) -> list[dict[str, Any]]:
    cursor = db.execute(sql, args)
    names = [d.name for d in cursor.description or []]
    return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


# (steps run cleanly first, the step that is killed, where)
CASES = [
    ([], "open", "venue.market_order:1:before"),  # recorded, never sent
    ([], "open", "venue.market_order:1:after"),  # filled on the exchange, not in the database
    ([], "open", "store.apply_fill:1:after"),  # position recorded, no protection yet
    ([], "open", "venue.place_protection:1:after"),  # OCO resting, the position does not know it
    (["open"], "partial_close", "venue.cancel:1:after"),  # protection cancelled, nothing sold
    (["open"], "partial_close", "venue.market_order:1:after"),  # sold, not recorded
    (["open"], "partial_close", "store.apply_fill:1:after"),  # recorded, protection not replaced
    (["open"], "flip", "store.apply_fill:1:after"),  # closing leg recorded, opposite leg not sent
    (["open"], "flip", "venue.market_order:2:after"),  # opposite leg filled, not recorded
    (["open"], "stop_move", "venue.cancel:1:after"),  # old stop cancelled, new one not placed
    (["open"], "stop_move", "venue.place_protection:1:after"),  # new stop resting, not recorded
]


@pytest.mark.parametrize(("before", "step", "crash_at"), CASES)
async def test_sigkill_then_restart_leaves_everything_consistent(
    *,
    db: psycopg.Connection[Any],
    exchange: str,
    account: tuple[str, str],
    before: list[str],
    step: str,
    crash_at: str,
) -> None:
    user = create_user(db)
    trader_id = create_trader(db, user)
    trade_for_real(db, user, trader_id)
    set_risk(db, trader_id, 1000, 3, 500)
    signal_id = uuid.uuid4()
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"{exchange}/api/v3/ticker/price", params={"symbol": "BTCUSDT"})
    price = Decimal(str(reply.json()["price"]))
    db.execute(
        "insert into signals (id, trader_id, user_id, symbol, trigger_price)"
        " values (%s, %s, %s, 'BTCUSDT', %s)",
        (signal_id, trader_id, user.id, price),
    )
    trader_row = rows(db, "select * from traders where id = %s", trader_id)[0]
    env = {"token": user.machine_jwt(create_machine(db, user)), "signal": str(signal_id),
           "trader": json.dumps(trader_row, default=str)}  # fmt: skip

    async def run(step: str, crash_at: str | None = None) -> int:
        return await asyncio.to_thread(run_driver, exchange, account, env, step=step, crash_at=crash_at)

    for clean in before:
        assert await run(clean) == 0
    assert await run(step, crash_at) == -9
    assert await run("recover") == 0
    assert await run("recover") == 0  # a second restart changes nothing

    venue = BinanceVenue(exchange, *account, settle_secs=0.01)
    await venue.start()
    try:
        trades = rows(db, "select * from trades where signal_id = %s", signal_id)
        assert [t for t in trades if t["status"] == "pending" and t["order_type"] == "MARKET"] == []
        moved = Decimal(0)
        for trade in trades:
            found = await venue.lookup("BTCUSDT", trade["client_order_id"])
            if trade["order_type"] == "MARKET":
                if trade["status"] == "filled":
                    assert found is not None and found.state == "FILLED"
                    assert found.fill is not None and found.fill.quantity == trade["quantity"]
                    base_fee = trade["fee"] if trade["fee_asset"] in ("BTC", "BASE") else 0
                    moved += (trade["quantity"] - base_fee) if trade["side"] == "BUY" else -trade["quantity"]
                else:
                    assert found is None, f"a failed order exists on the exchange: {trade}"
            elif trade["status"] == "filled":
                assert found is not None and found.state == "FILLED" and found.fill is not None
                moved += (
                    -found.fill.quantity
                    if trade["side"] == "SELL"
                    else found.fill.quantity - found.fill.base_fee
                )
        balances = await venue.balances()
        free, locked = balances["BTC"]
        assert free + locked - BTC_START == moved, "the exchange's BTC and the recorded fills disagree"
        open_orders = {o.client_order_id for o in await venue.open_orders("BTCUSDT")}
        pending = {t["client_order_id"] for t in trades if t["status"] == "pending"}
        assert open_orders == pending
        positions = rows(db, "select * from positions where signal_id = %s and status = 'open'", signal_id)
        signal = rows(db, "select status from signals where id = %s", signal_id)[0]
        assert len(positions) <= 1
        if positions:
            position = positions[0]
            protection = position["metadata"]["protection"]
            assert open_orders == {protection["stop_loss_id"], protection["take_profit_id"]}, "not guarded"
            assert signal["status"] == "position_open"
        else:
            assert open_orders == set()
            assert signal["status"] == "closed"
    finally:
        await venue.aclose()
