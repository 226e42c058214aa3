"""Order values: our client order ids, the venue's report of an order, and what it filled."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import NewType

from worker.domain.enums import OrderSide, OrderType
from worker.domain.money import ZERO

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
