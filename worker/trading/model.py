"""Trading values: client order ids, order reports and fills, trailing-stop specs, open positions."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, NewType

from worker.domain.enums import OrderSide, OrderType, PositionSide, TradingMode
from worker.trading.ledger import Book
from worker.trading.money import ZERO, plain

ClientOrderId = NewType("ClientOrderId", str)
ExchangeOrderId = NewType("ExchangeOrderId", int)


def client_order_id(origin: uuid.UUID, leg: str) -> ClientOrderId:
    """Our id for one order: derived from what caused it (an analysis, a position) and the leg, so a retry
    of the same work derives the same id and can never place the order twice. Binance's id rule holds."""
    digest = hashlib.sha256(f"{origin}:{leg}".encode()).hexdigest()
    return ClientOrderId(f"tm{digest[:30]}")


def derived_id(origin: uuid.UUID, what: str) -> uuid.UUID:
    """A stable uuid for a row the worker creates because of `origin` (the position an analysis opens)."""
    return uuid.uuid5(origin, what)


class CloseReason(StrEnum):
    """Why a position was closed (positions.close_reason)."""

    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    TRAILING_STOP = "trailing_stop"
    DECISION = "decision"
    FLIP = "flip"
    PROTECTION_FAILED = "protection_failed"


class OrderState(StrEnum):
    """Binance order statuses, as the venues report them."""

    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    EXPIRED_IN_MATCH = "EXPIRED_IN_MATCH"


OPEN_ORDER_STATES = frozenset({OrderState.NEW, OrderState.PARTIALLY_FILLED})


@dataclass(frozen=True, slots=True)
class Fill:
    """What an order executed: base quantity, average price, and the fee valued in the quote asset.

    `base_fee` is commission taken from the base asset received (Binance charges a BUY's fee in base), so the
    position holds `quantity - base_fee`.
    """

    quantity: Decimal
    price: Decimal
    fee_quote: Decimal
    fee: Decimal
    fee_asset: str
    base_fee: Decimal = ZERO

    @property
    def net_quantity(self) -> Decimal:
        return self.quantity - self.base_fee


@dataclass(frozen=True, slots=True)
class OrderReport:
    """The venue's view of one order."""

    client_order_id: ClientOrderId
    symbol: str
    side: OrderSide
    order_type: OrderType
    state: OrderState
    exchange_order_id: ExchangeOrderId | None
    fill: Fill | None  # None until something executed
    stop_price: Decimal | None = None

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_ORDER_STATES


class TrailingMode(StrEnum):
    PERCENT = "percent"
    ATR = "atr"


@dataclass(frozen=True, slots=True)
class TrailingSpec:
    """A trailing stop: `distance` is a fraction of price (percent mode) or a multiple of ATR (atr mode)."""

    mode: TrailingMode
    distance: Decimal
    activation_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class TrailingState:
    """The best price seen since activation and the stop it implies (ratchets only favourably)."""

    reference_price: Decimal | None = None
    stop_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Protection:
    """Exchange-side orders guarding a real position (client ids; None for a leg not placed)."""

    stop_loss_id: ClientOrderId | None = None
    take_profit_id: ClientOrderId | None = None
    stop_loss_order_id: ExchangeOrderId | None = None
    take_profit_order_id: ExchangeOrderId | None = None
    generation: int = 0  # bumped on every replacement, so each replacement gets fresh client ids

    @property
    def client_ids(self) -> tuple[ClientOrderId, ...]:
        return tuple(i for i in (self.stop_loss_id, self.take_profit_id) if i is not None)


@dataclass(frozen=True, slots=True)
class ProtectionRequest:
    """Rest these exits for a position of `quantity` on `side` (stop-loss, take-profit, or both: OCO)."""

    symbol: str
    side: PositionSide
    quantity: Decimal
    stop_loss: Decimal | None
    take_profit: Decimal | None
    stop_loss_id: ClientOrderId
    take_profit_id: ClientOrderId
    generation: int


@dataclass(frozen=True, slots=True)
class OpenPosition:
    """An open position as the executor and the monitor know it."""

    id: uuid.UUID
    signal_id: uuid.UUID
    trader_id: uuid.UUID
    symbol: str
    mode: TradingMode
    book: Book
    stop_loss: Decimal | None
    take_profit: Decimal | None
    trailing: TrailingSpec | None = None
    trailing_state: TrailingState = TrailingState()
    protection: Protection = Protection()
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def side(self) -> PositionSide:
        return self.book.side

    @property
    def entry_side(self) -> OrderSide:
        return OrderSide.BUY if self.side is PositionSide.LONG else OrderSide.SELL

    @property
    def exit_side(self) -> OrderSide:
        return OrderSide.SELL if self.side is PositionSide.LONG else OrderSide.BUY

    def levels_json(self) -> dict[str, Any]:
        """The columns and metadata describing this position's protection (for the database)."""
        return {
            "stop_loss": _text(self.stop_loss),
            "take_profit": _text(self.take_profit),
            "trailing_stop_percent": _text(self.trailing.distance)
            if self.trailing is not None and self.trailing.mode is TrailingMode.PERCENT
            else None,
            "trailing_stop_activation_price": _text(self.trailing.activation_price)
            if self.trailing is not None
            else None,
            "trailing_stop_reference_price": _text(self.trailing_state.reference_price),
        }


def _text(value: Decimal | None) -> str | None:
    return None if value is None else plain(value)


def entry_side(side: PositionSide) -> OrderSide:
    return OrderSide.BUY if side is PositionSide.LONG else OrderSide.SELL


def opposite(side: PositionSide) -> PositionSide:
    return PositionSide.SHORT if side is PositionSide.LONG else PositionSide.LONG
