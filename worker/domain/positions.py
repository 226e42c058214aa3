"""Position values: why a position closed, its trailing stop, its exchange-side protection, its open state."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from worker.domain.enums import OrderSide, PositionSide, TradingMode
from worker.domain.ledger import Book
from worker.domain.orders import ClientOrderId, ExchangeOrderId


class CloseReason(StrEnum):
    """Why a position was closed (positions.close_reason)."""

    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    TRAILING_STOP = "trailing_stop"
    DECISION = "decision"
    FLIP = "flip"
    PROTECTION_FAILED = "protection_failed"


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


class IntentKind(StrEnum):
    """What an order was for (trades.intent.kind)."""

    OPEN = "open"
    INCREASE = "increase"
    REDUCE = "reduce"
    CLOSE = "close"
    PROTECTION = "protection"


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """What the worker meant to do with an order, recorded before it is sent (trades.intent): after a crash,
    recovery finds the order at the venue and completes exactly this."""

    kind: IntentKind
    position_id: uuid.UUID | None
    # An entry: the position it opens.
    trader_id: uuid.UUID | None = None
    side: PositionSide | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    analysis_id: uuid.UUID | None = None
    flip: bool = False
    trailing: TrailingSpec | None = None
    # A close: why. A protective order: which leg (the stop-loss, else the take-profit).
    reason: CloseReason | None = None
    stop_leg: bool = False


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
        return entry_side(self.side)

    @property
    def exit_side(self) -> OrderSide:
        return entry_side(opposite(self.side))


def entry_side(side: PositionSide) -> OrderSide:
    return OrderSide.BUY if side is PositionSide.LONG else OrderSide.SELL


def opposite(side: PositionSide) -> PositionSide:
    return PositionSide.SHORT if side is PositionSide.LONG else PositionSide.LONG
