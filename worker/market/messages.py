"""Binance stream messages -> typed updates (kline, 24h ticker, control replies, server shutdown)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from worker.domain.intervals import INTERVAL_MS


class MalformedMessage(ValueError):
    """A stream message we cannot read (logged once and skipped, never fatal)."""


@dataclass(frozen=True, slots=True)
class KlineUpdate:
    symbol: str
    interval: str
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    closed: bool
    event_time_ms: int


@dataclass(frozen=True, slots=True)
class Ticker:
    """The rolling 24 h statistics of one symbol (prices Decimal, as Binance sends them)."""

    symbol: str
    last_price: Decimal
    open_price: Decimal
    high_price: Decimal
    low_price: Decimal
    price_change: Decimal
    price_change_percent: Decimal
    bid_price: Decimal
    ask_price: Decimal
    volume: Decimal
    quote_volume: Decimal
    event_time_ms: int

    def as_signal_dict(self) -> dict[str, float | str | int]:
        """The `ticker` dict signal code receives (floats, like the klines arrays)."""
        return {
            "symbol": self.symbol,
            "last_price": float(self.last_price),
            "open_price": float(self.open_price),
            "high_price": float(self.high_price),
            "low_price": float(self.low_price),
            "price_change": float(self.price_change),
            "price_change_percent": float(self.price_change_percent),
            "bid_price": float(self.bid_price),
            "ask_price": float(self.ask_price),
            "volume": float(self.volume),
            "quote_volume": float(self.quote_volume),
            "event_time_ms": self.event_time_ms,
        }


@dataclass(frozen=True, slots=True)
class ControlReply:
    """The answer to a SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS request (error set if it failed)."""

    request_id: int | str | None
    result: Any
    error: str | None


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    event_time_ms: int


Message = KlineUpdate | Ticker | ControlReply | ServerShutdown


def parse_message(text: str | bytes) -> Message | None:
    """Parse one raw or combined-stream message; None for events we do not use.

    Raises:
        MalformedMessage: the message is not JSON or lacks fields its event type needs.
    """
    try:
        message = json.loads(text)
    except ValueError as error:
        raise MalformedMessage(f"not JSON: {error}") from error
    if not isinstance(message, dict):
        raise MalformedMessage("not a JSON object")
    if "data" in message and "stream" in message:
        message = message["data"]
        if not isinstance(message, dict):
            raise MalformedMessage("combined message without an object payload")
    try:
        event = message.get("e")
        if event == "kline":
            return _kline(message)
        if event == "24hrTicker":
            return parse_ticker(message)
        if event == "serverShutdown":
            return ServerShutdown(int(message["E"]))
        if "id" in message and ("result" in message or "code" in message):
            failure = None if "code" not in message else f"code={message['code']} {message.get('msg', '')}"
            return ControlReply(message["id"], message.get("result"), failure)
    except (KeyError, TypeError, ValueError, InvalidOperation) as error:
        raise MalformedMessage(f"bad {message.get('e', 'control')} message: {error!r}") from error
    return None


def _kline(message: dict[str, Any]) -> KlineUpdate:
    kline = message["k"]
    interval = kline["i"]
    if interval not in INTERVAL_MS:
        raise ValueError(f"unknown interval {interval!r}")
    closed = kline["x"]
    if not isinstance(closed, bool):
        raise TypeError("x must be a boolean")
    return KlineUpdate(
        symbol=str(kline["s"]),
        interval=interval,
        open_time=int(kline["t"]),
        open=float(kline["o"]),
        high=float(kline["h"]),
        low=float(kline["l"]),
        close=float(kline["c"]),
        volume=float(kline["v"]),
        closed=closed,
        event_time_ms=int(message["E"]),
    )


def parse_ticker(message: dict[str, Any]) -> Ticker:
    """A `24hrTicker` event's fields (raises KeyError, TypeError, ValueError, InvalidOperation)."""
    return Ticker(
        symbol=str(message["s"]),
        last_price=Decimal(message["c"]),
        open_price=Decimal(message["o"]),
        high_price=Decimal(message["h"]),
        low_price=Decimal(message["l"]),
        price_change=Decimal(message["p"]),
        price_change_percent=Decimal(message["P"]),
        bid_price=Decimal(message["b"]),
        ask_price=Decimal(message["a"]),
        volume=Decimal(message["v"]),
        quote_volume=Decimal(message["q"]),
        event_time_ms=int(message["E"]),
    )
