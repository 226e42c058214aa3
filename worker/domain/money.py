"""Exact money arithmetic and the order filters (LOT_SIZE, PRICE_FILTER, NOTIONAL) in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_UP, Context, Decimal, localcontext
from typing import Any

from worker.errors import OrderRejected

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)
# Enough digits that products and sums of prices and quantities never round (28 is Python's default).
PRECISION = 60


def exact() -> Any:
    """A context manager for Decimal arithmetic that does not round products and sums of real amounts."""
    return localcontext(Context(prec=PRECISION))


def to_decimal(value: object) -> Decimal:
    """Parse a number as it was written (never through binary float)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise TypeError("a bool is not an amount")
    if isinstance(value, int | str):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(str(value))
    raise TypeError(f"not an amount: {value!r}")


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    """The largest multiple of `step` not above `value` (step 0: unchanged)."""
    if step <= 0:
        return value
    with exact():
        return (value / step).to_integral_value(ROUND_DOWN) * step


def round_to(value: Decimal, step: Decimal, *, up: bool | None = None) -> Decimal:
    """`value` on the `step` grid: nearest (half even), or always up / always down."""
    if step <= 0:
        return value
    mode = ROUND_HALF_EVEN if up is None else (ROUND_UP if up else ROUND_DOWN)
    with exact():
        return (value / step).to_integral_value(mode) * step


def plain(value: Decimal) -> str:
    """A Decimal as the plain string exchanges and Postgres expect (no exponent, no trailing zeros)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


@dataclass(frozen=True, slots=True)
class SymbolRules:
    """The filters one symbol's orders must pass (Binance exchangeInfo; a value of 0 disables a rule)."""

    symbol: str
    base_asset: str
    quote_asset: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    max_notional: Decimal
    apply_min_to_market: bool = True

    @classmethod
    def from_exchange_info(cls, info: Mapping[str, Any]) -> SymbolRules:
        """Parse one `symbols[]` entry; handles both NOTIONAL and the legacy MIN_NOTIONAL filter."""
        filters = {f["filterType"]: f for f in info.get("filters", [])}
        price = filters.get("PRICE_FILTER", {})
        lot = filters.get("LOT_SIZE", {})
        market_lot = filters.get("MARKET_LOT_SIZE", {})
        notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
        apply_min = notional.get("applyMinToMarket", notional.get("applyToMarket", True))
        return cls(
            symbol=str(info["symbol"]),
            base_asset=str(info["baseAsset"]),
            quote_asset=str(info["quoteAsset"]),
            tick_size=Decimal(price.get("tickSize", "0")),
            min_price=Decimal(price.get("minPrice", "0")),
            max_price=Decimal(price.get("maxPrice", "0")),
            step_size=Decimal(lot.get("stepSize", "0")),
            min_qty=Decimal(lot.get("minQty", "0")),
            max_qty=Decimal(lot.get("maxQty", "0")),
            market_max_qty=Decimal(market_lot.get("maxQty", "0")),
            min_notional=Decimal(notional.get("minNotional", "0")),
            max_notional=Decimal(notional.get("maxNotional", "0")),
            apply_min_to_market=bool(apply_min),
        )

    @classmethod
    def paper(cls, symbol: str, quote_asset: str = "USDT", min_notional: Decimal = ONE) -> SymbolRules:
        """Rules for paper trading when no exchange rules are at hand: 8-decimal grids, a small minimum."""
        base = symbol[: -len(quote_asset)] if symbol.endswith(quote_asset) else symbol
        grid = Decimal("0.00000001")
        return cls(symbol, base, quote_asset, grid, grid, ZERO, grid, grid, ZERO, ZERO, min_notional, ZERO)

    # Rounding and checks ----------------------------------------------------------------------------
    def quantity(self, quantity: Decimal) -> Decimal:
        """Round a quantity down onto the LOT_SIZE grid (counted from minQty, as Binance checks it)."""
        if self.step_size <= 0:
            return quantity
        with exact():
            return (
                self.min_qty + floor_to(quantity - self.min_qty, self.step_size)
                if quantity >= self.min_qty
                else ZERO
            )

    def price(self, price: Decimal, *, up: bool | None = None) -> Decimal:
        """Round a price onto the PRICE_FILTER tick grid (nearest, or in the given direction)."""
        return round_to(price, self.tick_size, up=up)

    def check(self, quantity: Decimal, price: Decimal, *, market: bool) -> None:
        """Raise OrderRejected naming the filter an order of `quantity` at `price` would fail.

        For a MARKET order `price` is the reference price the exchange will judge the notional by.
        """
        what = f"symbol={self.symbol} quantity={plain(quantity)} price={plain(price)}"
        if quantity <= 0 or quantity < self.min_qty or (self.max_qty > 0 and quantity > self.max_qty):
            raise OrderRejected(f"Filter failure: LOT_SIZE ({what})")
        if self.step_size > 0 and (quantity - self.min_qty) % self.step_size:
            raise OrderRejected(f"Filter failure: LOT_SIZE ({what})")
        if market and self.market_max_qty > 0 and quantity > self.market_max_qty:
            raise OrderRejected(f"Filter failure: MARKET_LOT_SIZE ({what})")
        if not market:
            if price < self.min_price or (self.max_price > 0 and price > self.max_price):
                raise OrderRejected(f"Filter failure: PRICE_FILTER ({what})")
            if self.tick_size > 0 and price % self.tick_size:
                raise OrderRejected(f"Filter failure: PRICE_FILTER ({what})")
        with exact():
            notional = quantity * price
        if (not market or self.apply_min_to_market) and notional < self.min_notional:
            raise OrderRejected(f"Filter failure: NOTIONAL ({what} notional={plain(notional)})")
        if not market and self.max_notional > 0 and notional > self.max_notional:
            raise OrderRejected(f"Filter failure: NOTIONAL ({what} notional={plain(notional)})")

    def market_quantity(self, quantity: Decimal, reference_price: Decimal) -> Decimal:
        """Round a MARKET order's quantity down to the lot grid and check it; returns what may be sent."""
        rounded = self.quantity(quantity)
        self.check(rounded, reference_price, market=True)
        return rounded
