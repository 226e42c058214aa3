"""The venue interface the executor trades through, and the paper venue (fills at the current price).

A venue sends orders and reports them; it never writes our state. Our state (trades, positions, the paper
balance) is written by the order flow through the database, so both venues share one code path for it.
On paper there is nothing to rest on an exchange: protection and cancels are no-ops there, and the
position monitor is a paper position's only guard.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Protocol

from worker.domain.enums import OrderSide, OrderType, TradingMode
from worker.domain.money import ONE, ZERO, SymbolRules, exact
from worker.domain.orders import ClientOrderId, ExchangeOrderId, Fill, OrderReport, OrderState
from worker.domain.positions import Protection, ProtectionRequest
from worker.errors import OrderRejected


class Venue(Protocol):
    mode: TradingMode
    supports_protection: bool  # True: stops and targets rest on the venue itself

    async def start(self) -> None:
        """Connect and load what the venue needs (symbol rules, fee rates)."""
        ...

    async def aclose(self) -> None: ...

    async def rules(self, symbol: str) -> SymbolRules: ...

    async def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Asset -> (free, locked)."""
        ...

    async def market_order(
        self,
        client_order_id: ClientOrderId,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        reference_price: Decimal,
    ) -> OrderReport:
        """Send a MARKET order (already rounded and checked) and return its final report.

        Raises:
            OrderRejected: the venue refused it (the message is the venue's).
            TransientError: the outcome could not be established; the order may or may not exist.
        """
        ...

    async def lookup(self, symbol: str, client_order_id: ClientOrderId) -> OrderReport | None:
        """The order with our id, or None if the venue has never accepted it."""
        ...

    async def place_protection(self, request: ProtectionRequest) -> Protection:
        """Rest a stop-loss and/or take-profit for a position (an OCO when both)."""
        ...

    async def cancel(self, symbol: str, client_order_id: ClientOrderId) -> OrderReport | None:
        """Cancel a resting order; returns its final report (FILLED if it filled first), None if unknown."""
        ...

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]: ...


class PaperVenue:
    """Simulated fills at the reference price, moved against us by `slippage_rate`, charged `fee_rate`."""

    mode = TradingMode.PAPER
    supports_protection = False

    def __init__(
        self,
        fee_rate: Decimal,
        slippage_rate: Decimal,
        paper_balance: Callable[[], Awaitable[Decimal]],
        *,
        min_notional: Decimal = ONE,
        quote_asset: str = "USDT",
    ) -> None:
        if not (0 <= fee_rate < 1 and 0 <= slippage_rate < 1):
            raise ValueError("paper fee and slippage rates must be fractions in [0, 1)")
        self._paper_balance = paper_balance
        self.fee_rate = fee_rate
        self.slippage_rate = slippage_rate
        self._min_notional = min_notional
        self._quote_asset = quote_asset
        self._rules: dict[str, SymbolRules] = {}
        self._next_order_id = 1

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def rules(self, symbol: str) -> SymbolRules:
        rules = self._rules.get(symbol)
        if rules is None:
            rules = self._rules[symbol] = SymbolRules.paper(symbol, self._quote_asset, self._min_notional)
        return rules

    async def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        # The paper account lives in the database (it moves with every recorded fill).
        return {self._quote_asset: (await self._paper_balance(), ZERO)}

    def fill_price(self, side: OrderSide, reference_price: Decimal) -> Decimal:
        with exact():
            factor = ONE + self.slippage_rate if side is OrderSide.BUY else ONE - self.slippage_rate
            return reference_price * factor

    async def market_order(
        self,
        client_order_id: ClientOrderId,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        reference_price: Decimal,
    ) -> OrderReport:
        if reference_price <= 0:
            raise OrderRejected(f"no price for symbol={symbol}")
        price = self.fill_price(side, reference_price)
        with exact():
            fee = quantity * price * self.fee_rate
        order_id = ExchangeOrderId(self._next_order_id)
        self._next_order_id += 1
        return OrderReport(
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            order_type=OrderType.MARKET,
            state=OrderState.FILLED,
            exchange_order_id=order_id,
            fill=Fill(quantity, price, fee, fee, self._quote_asset),
        )

    async def lookup(self, symbol: str, client_order_id: ClientOrderId) -> OrderReport | None:
        # Paper orders exist only in our own database: one that was recorded but not filled never executed.
        return None

    async def place_protection(self, request: ProtectionRequest) -> Protection:
        # The position monitor is a paper position's only protection.
        return Protection(generation=request.generation)

    async def cancel(self, symbol: str, client_order_id: ClientOrderId) -> OrderReport | None:
        return None

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        return []
