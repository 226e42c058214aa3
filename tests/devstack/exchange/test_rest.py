"""python-binance (sync and async clients, unchanged but for the base URL) against the simulator."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from decimal import Decimal

import httpx
import pytest
from binance.async_client import AsyncClient
from binance.client import Client
from binance.exceptions import BinanceAPIException

from devstack.exchange.rest import verify_signature
from devstack.exchange.server import DEV_API_KEY, DEV_API_SECRET, ExchangeSimulator
from tests.devstack.exchange.conftest import START_MS


def sync_client(sim: ExchangeSimulator, key: str = DEV_API_KEY, secret: str = DEV_API_SECRET) -> Client:
    client = Client(key, secret, ping=False)
    client.API_URL = f"{sim.url}/api"
    return client


async def async_client(sim: ExchangeSimulator) -> AsyncClient:
    class SimAsyncClient(AsyncClient):  # type: ignore[misc]
        API_URL = f"{sim.url}/api"

    return await SimAsyncClient.create(DEV_API_KEY, DEV_API_SECRET)


def balances(client: Client) -> dict[str, Decimal]:
    return {b["asset"]: Decimal(b["free"]) for b in client.get_account()["balances"]}


def test_signature_matches_binance_documented_vector() -> None:
    secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
    query = (
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000"
        "&timestamp=1499827319559"
    )
    signature = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"

    assert verify_signature(secret, f"{query}&signature={signature}", "", signature)
    assert verify_signature(secret, "", f"{query}&signature={signature}", signature.upper())
    assert not verify_signature(secret, query.replace("price=0.1", "price=0.2"), "", signature)


async def test_sync_client_market_data_and_market_buy_with_fees(simulator: ExchangeSimulator) -> None:
    client = sync_client(simulator)
    try:
        server_time = await asyncio.to_thread(client.get_server_time)
        klines = await asyncio.to_thread(client.get_klines, symbol="BTCUSDT", interval="1m", limit=3)
        price = Decimal((await asyncio.to_thread(client.get_symbol_ticker, symbol="BTCUSDT"))["price"])
        before = await asyncio.to_thread(balances, client)

        order = await asyncio.to_thread(client.order_market_buy, symbol="BTCUSDT", quantity="0.002")

        after = await asyncio.to_thread(balances, client)
    finally:
        client.close_connection()
    assert server_time["serverTime"] == START_MS
    # Two closed candles and the one just opened (the 03:00 candle at its first instant).
    assert [row[0] for row in klines] == [START_MS - 120_000, START_MS - 60_000, START_MS]
    # BTCUSDT-1m.csv: 1735873140000,96952.68,96966.85,96952.67,96966.85,5.17376
    assert klines[1][1:6] == [
        "96952.68000000",
        "96966.85000000",
        "96952.67000000",
        "96966.85000000",
        "5.17376000",
    ]
    assert order["status"] == "FILLED" and order["executedQty"] == "0.00200000"
    fill = order["fills"][0]
    assert Decimal(fill["price"]) == price and fill["commissionAsset"] == "BTC"
    assert Decimal(fill["commission"]) == Decimal("0.000002")
    assert after["BTC"] - before["BTC"] == Decimal("0.002") - Decimal("0.000002")
    assert before["USDT"] - after["USDT"] == Decimal(order["cummulativeQuoteQty"]) == price * Decimal("0.002")


async def test_async_client_quote_order_qty_limit_and_cancel(simulator: ExchangeSimulator) -> None:
    client = await async_client(simulator)
    try:
        spent = await client.create_order(
            symbol="ETHUSDT", side="SELL", type="MARKET", quoteOrderQty="100", newClientOrderId="sell-eth-1"
        )
        resting = await client.order_limit_buy(symbol="BTCUSDT", quantity="0.001", price="50000.00")
        account = await client.get_account()
        open_orders = await client.get_open_orders(symbol="BTCUSDT")
        cancelled = await client.cancel_order(symbol="BTCUSDT", orderId=resting["orderId"])
        with pytest.raises(BinanceAPIException) as unknown:
            await client.cancel_order(symbol="BTCUSDT", orderId=resting["orderId"])
        with pytest.raises(BinanceAPIException) as missing:
            await client.get_order(symbol="BTCUSDT", orderId=999)
    finally:
        await client.close_connection()
    assert spent["clientOrderId"] == "sell-eth-1" and spent["status"] == "FILLED"
    assert Decimal(spent["executedQty"]) * Decimal(spent["fills"][0]["price"]) <= Decimal(100)
    assert spent["fills"][0]["commissionAsset"] == "USDT"
    usdt = next(b for b in account["balances"] if b["asset"] == "USDT")
    assert Decimal(usdt["locked"]) == Decimal("50")
    assert [o["orderId"] for o in open_orders] == [resting["orderId"]]
    assert cancelled["status"] == "CANCELED"
    assert (unknown.value.code, unknown.value.message) == (-2011, "Unknown order sent.")
    assert missing.value.code == -2013


async def test_resting_orders_fill_along_the_replayed_price_path(simulator: ExchangeSimulator) -> None:
    client = sync_client(simulator)
    market = simulator.markets["BTCUSDT"]
    # Over the next hour the path reaches the hour's high and low.
    span = market.price_range(START_MS, START_MS + 3_600_000)
    assert span is not None
    low = span[0]
    try:
        buy = await asyncio.to_thread(
            client.order_limit_buy, symbol="BTCUSDT", quantity="0.001", price=f"{low + 1:.2f}"
        )
        stop = await asyncio.to_thread(
            client.create_order, symbol="BTCUSDT", side="SELL", type="STOP_LOSS_LIMIT", quantity="0.001",
            stopPrice=f"{low + 5:.2f}", price=f"{low + 4:.2f}", timeInForce="GTC",
        )  # fmt: skip
        assert buy["status"] == "NEW" and stop["orderId"] == buy["orderId"] + 1

        simulator.clock.advance_ms(3_600_000)
        filled_buy = await asyncio.to_thread(client.get_order, symbol="BTCUSDT", orderId=buy["orderId"])
        filled_stop = await asyncio.to_thread(client.get_order, symbol="BTCUSDT", orderId=stop["orderId"])
    finally:
        client.close_connection()
    assert (
        filled_buy["status"] == "FILLED" and filled_buy["cummulativeQuoteQty"] == f"{(low + 1) * 0.001:.8f}"
    )
    assert filled_stop["status"] == "FILLED"
    assert Decimal(filled_stop["cummulativeQuoteQty"]) == Decimal(f"{low + 5:.2f}") * Decimal("0.001")


async def test_oco_leg_fill_expires_the_other_leg(simulator: ExchangeSimulator) -> None:
    client = sync_client(simulator)
    span = simulator.markets["BTCUSDT"].price_range(START_MS, START_MS + 3_600_000)
    assert span is not None
    try:
        oco = await asyncio.to_thread(
            client.create_oco_order, symbol="BTCUSDT", side="SELL", quantity="0.001",
            aboveType="LIMIT_MAKER", abovePrice=f"{span[1] - 1:.2f}",
            belowType="STOP_LOSS_LIMIT", belowStopPrice="80000.00", belowPrice="79000.00",
            belowTimeInForce="GTC",
        )  # fmt: skip
        simulator.clock.advance_ms(3_600_000)
        legs = [
            await asyncio.to_thread(client.get_order, symbol="BTCUSDT", orderId=order["orderId"])
            for order in oco["orders"]
        ]
        btc = await asyncio.to_thread(client.get_asset_balance, asset="BTC")
    finally:
        client.close_connection()
    assert oco["listOrderStatus"] == "EXECUTING"
    assert sorted((leg["type"], leg["status"]) for leg in legs) == [
        ("LIMIT_MAKER", "FILLED"), ("STOP_LOSS_LIMIT", "EXPIRED"),
    ]  # fmt: skip
    assert Decimal(btc["locked"]) == 0


@pytest.mark.parametrize(
    ("params", "code", "message"),
    [
        ({"quantity": "0.000001", "price": "90000.00"}, -1013, "Filter failure: LOT_SIZE"),
        ({"quantity": "0.001", "price": "90000.005"}, -1013, "Filter failure: PRICE_FILTER"),
        ({"quantity": "0.00001", "price": "90000.00"}, -1013, "Filter failure: NOTIONAL"),
        (
            {"quantity": "1", "price": "90000.00"},
            -2010,
            "Account has insufficient balance for requested action.",
        ),
    ],
)
async def test_order_rejections_use_binance_codes(
    simulator: ExchangeSimulator, params: dict[str, str], code: int, message: str
) -> None:
    client = sync_client(simulator)
    try:
        with pytest.raises(BinanceAPIException) as rejected:
            await asyncio.to_thread(client.order_limit_buy, symbol="BTCUSDT", **params)
    finally:
        client.close_connection()

    assert (rejected.value.status_code, rejected.value.code, rejected.value.message) == (400, code, message)


async def test_stop_that_would_trigger_immediately_and_duplicate_client_id_are_rejected(
    simulator: ExchangeSimulator,
) -> None:
    client = sync_client(simulator)
    try:
        with pytest.raises(BinanceAPIException) as immediate:
            await asyncio.to_thread(
                client.create_order, symbol="BTCUSDT", side="SELL", type="STOP_LOSS_LIMIT", quantity="0.001",
                stopPrice="200000.00", price="199000.00", timeInForce="GTC",
            )  # fmt: skip
        await asyncio.to_thread(
            client.order_limit_buy,
            symbol="BTCUSDT",
            quantity="0.001",
            price="50000.00",
            newClientOrderId="dup-1",
        )
        with pytest.raises(BinanceAPIException) as duplicate:
            await asyncio.to_thread(
                client.order_limit_buy, symbol="BTCUSDT", quantity="0.001", price="50000.00",
                newClientOrderId="dup-1",
            )  # fmt: skip
    finally:
        client.close_connection()
    assert (immediate.value.code, immediate.value.message) == (-2010, "Order would trigger immediately.")
    assert (duplicate.value.code, duplicate.value.message) == (-2010, "Duplicate order sent.")


async def test_bad_signature_unknown_key_and_old_timestamp_are_rejected(simulator: ExchangeSimulator) -> None:
    wrong_secret = sync_client(simulator, secret="not-the-secret")
    unknown_key = sync_client(simulator, key="nobody")
    try:
        with pytest.raises(BinanceAPIException) as bad_signature:
            await asyncio.to_thread(wrong_secret.get_account)
        with pytest.raises(BinanceAPIException) as bad_key:
            await asyncio.to_thread(unknown_key.get_account)
    finally:
        wrong_secret.close_connection()
        unknown_key.close_connection()
    query = f"timestamp={int(time.time() * 1000) - 600_000}&recvWindow=5000"
    signature = hmac.new(DEV_API_SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
    async with httpx.AsyncClient(base_url=simulator.url) as http:
        stale = await http.get(
            f"/api/v3/account?{query}&signature={signature}", headers={"X-MBX-APIKEY": DEV_API_KEY}
        )
    assert (bad_signature.value.status_code, bad_signature.value.code) == (400, -1022)
    assert (bad_key.value.status_code, bad_key.value.code) == (401, -2015)
    assert stale.status_code == 400
    assert stale.json() == {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}


async def test_weight_header_429_with_retry_after_and_418(simulator: ExchangeSimulator) -> None:
    async with httpx.AsyncClient(base_url=simulator.url) as http:
        first = await http.get("/api/v3/exchangeInfo")
        second = await http.get("/api/v3/ping")
        simulator.faults.update({"reject_status": 429, "reject_count": 1, "retry_after_secs": 7})
        limited = await http.get("/api/v3/ping")
        after = await http.get("/api/v3/ping")
        simulator.faults.update({"reject_status": 418, "reject_count": 1})
        banned = await http.get("/api/v3/ping")

    assert int(second.headers["X-MBX-USED-WEIGHT-1M"]) == int(first.headers["X-MBX-USED-WEIGHT-1M"]) + 1
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert limited.json()["code"] == -1003 and "X-MBX-USED-WEIGHT-1M" in limited.headers
    assert after.status_code == 200
    assert banned.status_code == 418 and banned.json()["code"] == -1003


async def test_exchange_info_filters_and_klines_windows(simulator: ExchangeSimulator) -> None:
    client = sync_client(simulator)
    try:
        info = await asyncio.to_thread(client.get_symbol_info, "BTCUSDT")
        page = await asyncio.to_thread(
            client.get_klines, symbol="BTCUSDT", interval="5m", startTime=START_MS - 3_600_000, limit=1000
        )
        with pytest.raises(BinanceAPIException) as bad_interval:
            await asyncio.to_thread(client.get_klines, symbol="BTCUSDT", interval="7m")
    finally:
        client.close_connection()
    filters = {f["filterType"]: f for f in info["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
    assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
    assert filters["NOTIONAL"]["minNotional"] == "5.00000000"
    # 12 closed 5m candles of the last hour, then the one forming: nothing from the future.
    assert [row[0] for row in page] == [START_MS - 3_600_000 + i * 300_000 for i in range(13)]
    assert bad_interval.value.code == -1120
