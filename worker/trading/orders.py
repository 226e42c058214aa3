"""The order flow: record an order, send it (or find it), and apply its fill to the position, exactly once.

Every order is recorded (a `trades` row, status pending, with its intent) before it is sent, under an id
derived from what caused it; every fill is applied with one transition RPC that moves the position, the
trade, the signal and (on paper) the cash together. A retry therefore finds its order recorded or filled
and acts at most once, and recovery can finish any order a crash left between the two.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from worker.clock import Clock
from worker.db.trading import TradingStore
from worker.domain import ledger
from worker.domain.enums import OrderSide, OrderStatus, OrderType, PositionSide, SignalStatus, TradingMode
from worker.domain.money import ZERO, SymbolRules, exact, plain
from worker.domain.orders import ClientOrderId, OrderReport
from worker.domain.positions import CloseReason, OpenPosition, OrderIntent, TrailingSpec
from worker.errors import OrderRejected, WorkerError
from worker.trading.guardrails import Guardrails
from worker.trading.positions import OpenPositions
from worker.trading.venue import Venue

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Submitted:
    """What became of a MARKET order: its report with a fill, a replay of one already applied, or an error."""

    report: OrderReport | None
    replayed: bool = False
    error: str | None = None

    @property
    def filled(self) -> bool:
        return self.report is not None and self.report.fill is not None


class OrderFlow:
    """Records, sends and applies orders; the in-memory positions follow every applied fill."""

    def __init__(
        self,
        trading: TradingStore,
        venue: Venue,
        positions: OpenPositions,
        guardrails: Guardrails,
        *,
        clock: Clock,
    ) -> None:
        self._trading = trading
        self._venue = venue
        self._positions = positions
        self._guardrails = guardrails
        self._clock = clock

    @property
    def mode(self) -> TradingMode:
        return self._venue.mode

    async def rules(self, symbol: str) -> SymbolRules:
        """The venue's order filters for `symbol` (OrderRejected: not traded there)."""
        return await self._venue.rules(symbol)

    async def balance(self) -> Decimal:
        """The quote currency free to commit (USDT)."""
        free, _ = (await self._venue.balances()).get("USDT", (ZERO, ZERO))
        return Decimal(free)

    async def record(
        self,
        cid: ClientOrderId,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        *,
        signal_id: uuid.UUID,
        position_id: uuid.UUID | None,
        order_type: OrderType,
        price: Decimal,
        intent: OrderIntent,
    ) -> OrderStatus:
        """Record an order before it is sent; its status (an earlier recording's, on a retry)."""
        recorded = await self._trading.record_order(
            cid, symbol, side, quantity, self.mode, signal_id=signal_id, position_id=position_id,
            order_type=order_type, price=price, intent=intent,
        )  # fmt: skip
        return recorded.status

    async def submit(
        self,
        cid: ClientOrderId,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        price: Decimal,
        *,
        signal_id: uuid.UUID,
        position_id: uuid.UUID | None,
        intent: OrderIntent,
    ) -> Submitted:
        """Record (with `price`, the reference the database bounds a paper fill by), then send (or find) a
        MARKET order; a failure is recorded with the venue's message."""
        recorded = await self._trading.record_order(
            cid, symbol, side, quantity, self.mode, signal_id=signal_id, position_id=position_id,
            order_type=OrderType.MARKET, price=price, intent=intent,
        )  # fmt: skip
        if recorded.status is OrderStatus.FILLED:
            return Submitted(None, replayed=True)
        if recorded.status in (OrderStatus.FAILED, OrderStatus.CANCELLED):
            return Submitted(None, error=recorded.error_message or "the order failed earlier")
        report = await self._venue.lookup(symbol, cid)
        if report is None:
            try:
                report = await self._venue.market_order(cid, symbol, side, quantity, price)
            except OrderRejected as error:
                await self._trading.mark_order(cid, OrderStatus.FAILED, error_message=str(error))
                return Submitted(None, error=str(error))
        if report.fill is None or report.fill.quantity <= 0:
            message = f"order ended {report.state} without a fill"
            await self._trading.mark_order(
                cid, OrderStatus.FAILED, exchange_order_id=report.exchange_order_id, error_message=message
            )
            return Submitted(None, error=message)
        return Submitted(report)

    async def mark_quietly(self, cid: ClientOrderId, status: OrderStatus, error: str | None) -> None:
        """Record an order's end where failing to do so must not stop what the caller is doing."""
        try:
            await self._trading.mark_order(cid, status, error_message=error)
        except WorkerError as failure:
            logger.warning("could not mark order client_order_id=%s status=%s error=%s", cid, status, failure)

    # Fills --------------------------------------------------------------------------------------------
    async def apply_entry_fill(
        self,
        report: OrderReport,
        *,
        position_id: uuid.UUID,
        signal_id: uuid.UUID,
        trader_id: uuid.UUID,
        symbol: str,
        side: PositionSide,
        stop_loss: Decimal | None,
        take_profit: Decimal | None,
        trailing: TrailingSpec | None,
        metadata: dict[str, Any],
    ) -> OpenPosition:
        """Record an entry's fill as a new open position, watched (the caller protects it next)."""
        fill = report.fill
        assert fill is not None
        with exact():
            cost = fill.quantity * fill.price
        fee_quote = ZERO if fill.base_fee else fill.fee_quote
        book = ledger.add(None, side, fill.net_quantity, cost, fee_quote)
        position = OpenPosition(
            id=position_id, signal_id=signal_id, trader_id=trader_id, symbol=symbol, mode=self.mode,
            book=book, stop_loss=stop_loss, take_profit=take_profit, trailing=trailing, metadata=metadata,
        )  # fmt: skip
        result = await self._trading.apply_fill(
            report, position, expected_size=ZERO, signal_status=SignalStatus.POSITION_OPEN,
            paper_delta=self._paper_delta(None, book, fill.price, fee_quote),
        )  # fmt: skip
        if result.recorded is not None:
            position = result.recorded
        self._positions.watch(position)
        logger.info(
            "position opened position_id=%s symbol=%s side=%s size=%s entry_price=%s mode=%s",
            position.id, symbol, side, plain(position.book.size), plain(position.book.entry_price), self.mode,
        )  # fmt: skip
        return position

    async def apply_change_fill(
        self, report: OrderReport, position: OpenPosition, *, increase: bool
    ) -> OpenPosition:
        """Record a scale-in or partial-exit fill on an open position (exactly once)."""
        fill = report.fill
        assert fill is not None
        before = position.book
        realized = None
        if increase:
            with exact():
                cost = fill.quantity * fill.price
            fee_quote = ZERO if fill.base_fee else fill.fee_quote
            book = ledger.add(before, before.side, fill.net_quantity, cost, fee_quote)
        else:
            fee_quote = fill.fee_quote
            book, realized = ledger.reduce(before, fill.quantity, fill.price, fee_quote)
        updated = replace(position, book=book)
        result = await self._trading.apply_fill(
            report, updated, expected_size=before.size, realized=realized,
            paper_delta=self._paper_delta(before, book, fill.price, fee_quote),
        )  # fmt: skip
        if not result.applied:
            return position
        if realized is not None:
            self._guardrails.record_realized(position.trader_id, realized - fee_quote, self._clock.now())
        self._positions.watch(updated)
        return updated

    async def apply_close_fill(
        self, report: OrderReport, position: OpenPosition, reason: CloseReason, *, close_signal: bool = True
    ) -> None:
        """Record the fill that closed `position` (ours or an exchange-side stop), exactly once."""
        fill = report.fill
        assert fill is not None
        before = position.book
        # What the lot grid left unsold (dust) is booked at the exit price with the rest.
        book, realized = ledger.reduce(before, before.size, fill.price, fill.fee_quote)
        result = await self._trading.apply_fill(
            report, replace(position, book=book), expected_size=before.size, realized=realized,
            paper_delta=self._paper_delta(before, book, fill.price, fill.fee_quote), close_reason=reason,
            signal_status=SignalStatus.CLOSED if close_signal else None,
            signal_close_reason=f"position closed: {reason.value}",
        )  # fmt: skip
        now = self._clock.now()
        if result.applied:
            self._guardrails.record_realized(position.trader_id, realized - fill.fee_quote, now)
        self._guardrails.record_close(position.trader_id, position.symbol, now)
        self._positions.forget(position.id)
        logger.info(
            "position closed position_id=%s symbol=%s reason=%s exit_price=%s pnl=%s applied=%s",
            position.id, position.symbol, reason, plain(fill.price), plain(ledger.net_pnl(book)),
            result.applied,
        )  # fmt: skip

    def _paper_delta(
        self, before: ledger.Book | None, after: ledger.Book, price: Decimal, fee: Decimal
    ) -> Decimal | None:
        # Paper cash moves with the fill, in the same transaction; a real account is the exchange's.
        if self.mode is not TradingMode.PAPER:
            return None
        return ledger.paper_cash_delta(before, after, price, fee)
