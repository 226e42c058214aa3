"""Parsing Binance stream messages: kline, 24h ticker, control replies, shutdown notices, junk."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from worker.market.messages import (
    ControlReply,
    KlineUpdate,
    MalformedMessage,
    ServerShutdown,
    Ticker,
    parse_message,
)

# The documented kline example (binance-spot-api-docs web-socket-streams.md).
KLINE = {"e": "kline", "E": 1672515782136, "s": "BNBBTC", "k": {
    "t": 1672515780000, "T": 1672515839999, "s": "BNBBTC", "i": "1m", "f": 100, "L": 200, "o": "0.0010",
    "c": "0.0020", "h": "0.0025", "l": "0.0015", "v": "1000", "n": 100, "x": False, "q": "1.0000",
    "V": "500", "Q": "0.500", "B": "123456"}}  # fmt: skip
TICKER = {"e": "24hrTicker", "E": 1672515782136, "s": "BNBBTC", "p": "0.0015", "P": "250.00", "w": "0.0018",
          "x": "0.0009", "c": "0.0025", "Q": "10", "b": "0.0024", "B": "10", "a": "0.0026", "A": "100",
          "o": "0.0010", "h": "0.0025", "l": "0.0010", "v": "10000", "q": "18", "O": 0, "C": 86400000,
          "F": 0, "L": 18150, "n": 18151}  # fmt: skip


def test_raw_and_combined_kline() -> None:
    raw = parse_message(json.dumps(KLINE))
    combined = parse_message(json.dumps({"stream": "bnbbtc@kline_1m", "data": KLINE}))

    assert raw == combined == KlineUpdate("BNBBTC", "1m", 1672515780000, 0.001, 0.0025, 0.0015, 0.002, 1000.0,
                                          False, 1672515782136)  # fmt: skip


def test_ticker_keeps_decimal_prices() -> None:
    ticker = parse_message(json.dumps(TICKER))

    assert isinstance(ticker, Ticker)
    assert ticker.last_price == Decimal("0.0025") and ticker.price_change_percent == Decimal("250.00")
    assert ticker.as_signal_dict()["last_price"] == 0.0025


def test_control_replies_and_shutdown() -> None:
    assert parse_message('{"result": null, "id": 1}') == ControlReply(1, None, None)
    error = parse_message('{"code": 2, "msg": "Invalid request", "id": 7}')
    assert isinstance(error, ControlReply) and error.error == "code=2 Invalid request"
    assert parse_message('{"e": "serverShutdown", "E": 5}') == ServerShutdown(5)
    assert parse_message('{"e": "trade", "E": 5}') is None


@pytest.mark.parametrize(
    "text",
    ["not json", "[1]", '{"e": "kline", "E": 1, "k": {}}',
     json.dumps({**KLINE, "k": {**KLINE["k"], "x": "no"}}),  # type: ignore[dict-item]
     json.dumps({**TICKER, "c": "abc"}), '{"stream": "a", "data": 5}'],
)  # fmt: skip
def test_malformed_messages_raise(text: str) -> None:
    with pytest.raises(MalformedMessage):
        parse_message(text)
