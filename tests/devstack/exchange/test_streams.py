"""A plain `websockets` client against the simulator's combined and raw streams."""

from __future__ import annotations

import asyncio
import contextlib
import json

import websockets
from websockets.asyncio.client import connect

from devstack.exchange.server import ExchangeSimulator
from tests.devstack.exchange.conftest import START_MS


async def _next_kline(
    socket: websockets.asyncio.client.ClientConnection, *, closed: bool
) -> dict[str, object]:
    while True:
        message = json.loads(await socket.recv(decode=True))
        payload = message.get("data", message)
        if payload.get("e") == "kline" and payload["k"]["x"] is closed:
            return message


async def test_combined_stream_sends_forming_then_recorded_closing_kline(
    simulator: ExchangeSimulator,
) -> None:
    async with connect(f"{simulator.ws_url}/stream?streams=btcusdt@kline_1m") as socket:
        simulator.clock.advance_ms(30_000)
        forming = await _next_kline(socket, closed=False)
        simulator.clock.advance_ms(30_000)
        closing = await _next_kline(socket, closed=True)

    assert forming["stream"] == "btcusdt@kline_1m"
    kline = forming["data"]["k"]  # type: ignore[index]
    assert kline["t"] == START_MS and kline["T"] == START_MS + 59_999 and kline["s"] == "BTCUSDT"
    assert kline["i"] == "1m" and isinstance(kline["o"], str)
    final = closing["data"]["k"]  # type: ignore[index]
    # BTCUSDT-1m.csv, 03:00: 96966.85,96997.31,96966.84,96996.43,8.97293
    assert (final["o"], final["h"], final["l"], final["c"], final["v"]) == (
        "96966.85000000", "96997.31000000", "96966.84000000", "96996.43000000", "8.97293000",
    )  # fmt: skip
    assert float(kline["h"]) <= float(final["h"]) and float(kline["l"]) >= float(final["l"])


async def test_live_subscribe_list_and_unsubscribe(simulator: ExchangeSimulator) -> None:
    async with connect(f"{simulator.ws_url}/ws") as socket:
        await socket.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@ticker"], "id": 1}))
        reply = json.loads(await socket.recv())
        await socket.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": "two"}))
        listed = json.loads(await socket.recv())
        simulator.clock.advance_ms(5_000)
        ticker = json.loads(await socket.recv())
        await socket.send("not json")
        invalid = json.loads(await socket.recv())
        await socket.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["ethusdt@ticker"], "id": 3}))
        unsubscribed = json.loads(await socket.recv())

    assert reply == {"result": None, "id": 1}
    assert listed == {"result": ["ethusdt@ticker"], "id": "two"}
    assert ticker["e"] == "24hrTicker" and ticker["s"] == "ETHUSDT" and "stream" not in ticker
    assert set(ticker) >= {"p", "P", "w", "x", "c", "Q", "b", "B", "a", "A", "o", "h", "l", "v", "q", "n"}
    assert invalid["code"] == 3
    assert unsubscribed == {"result": None, "id": 3}


async def test_fast_clock_sends_every_closed_candle_in_order(simulator: ExchangeSimulator) -> None:
    async with connect(f"{simulator.ws_url}/ws/btcusdt@kline_1m") as socket:
        simulator.clock.advance_ms(10 * 60_000 + 1)
        closes = [(await _next_kline(socket, closed=True))["k"]["t"] for _ in range(10)]  # type: ignore[index]

    assert closes == [START_MS + i * 60_000 for i in range(10)]


async def test_drop_fault_closes_every_socket(simulator: ExchangeSimulator) -> None:
    async with connect(f"{simulator.ws_url}/stream?streams=btcusdt@kline_1m") as socket:
        simulator.clock.advance_ms(1_000)
        await _next_kline(socket, closed=False)
        assert simulator.hub.drop_all() == 1
        try:
            while True:
                await socket.recv()
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None


async def test_a_close_sends_the_final_candle_and_the_next_one_only_once_time_has_passed_in_it(
    simulator: ExchangeSimulator,
) -> None:
    async with connect(f"{simulator.ws_url}/ws/btcusdt@kline_1m") as socket:
        simulator.clock.advance_ms(60_000)  # exactly at the close: the next candle holds no trade yet
        first = json.loads(await socket.recv())
        with contextlib.suppress(TimeoutError):
            early = await asyncio.wait_for(socket.recv(), timeout=1.5)
            raise AssertionError(f"a candle was sent at the instant it opened: {early}")
        simulator.clock.advance_ms(1_000)
        second = json.loads(await socket.recv())

    assert (first["k"]["t"], first["k"]["x"]) == (START_MS, True)
    assert (second["k"]["t"], second["k"]["x"]) == (START_MS + 60_000, False)


async def test_a_held_stream_sends_nothing_and_loses_nothing_until_released(
    simulator: ExchangeSimulator,
) -> None:
    stream = "btcusdt@kline_1m"
    async with connect(f"{simulator.ws_url}/ws/{stream}") as socket:
        simulator.faults.update({"hold_streams": [stream]})
        simulator.clock.advance_ms(3 * 60_000 + 1_000)
        with contextlib.suppress(TimeoutError):
            held = await asyncio.wait_for(socket.recv(), timeout=1.5)
            raise AssertionError(f"a held stream sent {held}")
        simulator.faults.update({"hold_streams": None})
        released = [json.loads(await socket.recv())["k"] for _ in range(4)]

    assert [(kline["t"], kline["x"]) for kline in released] == [
        (START_MS, True), (START_MS + 60_000, True), (START_MS + 120_000, True), (START_MS + 180_000, False),
    ]  # fmt: skip
