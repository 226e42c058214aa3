"""Protection: a position's stop-loss and take-profit, kept in force while orders change it.

In real mode the levels rest on the exchange (an OCO when both); they lock the position's quantity, so any
order that changes the position lifts them first (`unguarded`) and rests them again afterwards, with fresh
client ids. If a resting exit filled meanwhile, the exchange closed the position: that fill is recorded as
the close. A position whose protection cannot be placed is closed at market, never left unguarded. On
paper nothing rests on a venue: the position monitor is the guard, so protecting means watching.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal

from worker.db.signals import SignalStore
from worker.db.trading import TradingStore
from worker.domain.enums import OrderStatus, OrderType, PositionSide
from worker.domain.orders import ClientOrderId, OrderReport, OrderState, client_order_id
from worker.domain.positions import (
    CloseReason,
    IntentKind,
    OpenPosition,
    OrderIntent,
    Protection,
    ProtectionRequest,
    TrailingState,
)
from worker.errors import OrderRejected, TransientError, WorkerError
from worker.trading.orders import OrderFlow
from worker.trading.positions import OpenPositions
from worker.trading.prices import PriceSource
from worker.trading.venue import Venue

logger = logging.getLogger(__name__)

MAX_NOTE_CHARS = 500  # signals_last_refusal_length


class Protector:
    """Places, lifts and reconciles positions' exits, and closes positions at market."""

    def __init__(
        self,
        flow: OrderFlow,
        venue: Venue,
        positions: OpenPositions,
        *,
        trading: TradingStore,
        signals: SignalStore,
        prices: PriceSource,
    ) -> None:
        self._flow = flow
        self._venue = venue
        self._positions = positions
        self._trading = trading
        self._signals = signals
        self._prices = prices

    # Resting exits ------------------------------------------------------------------------------------
    async def guard_new(self, position: OpenPosition) -> OpenPosition:
        """Protect a new position (unless its recorded state already is); the position as it now stands."""
        if position.protection == Protection():
            await self.protect(position, generation=1)
        return self._positions.get(position.id) or position

    async def protect(self, position: OpenPosition, *, generation: int) -> bool:
        """Rest the position's stop and target on the exchange; if that fails, close at market and say why.
        False when there was nothing to place on a venue (no levels, or paper: the monitor watches it)."""
        if not self._venue.supports_protection:
            self._positions.watch(position)
            return False
        if position.stop_loss is None and position.take_profit is None:
            return False
        rules = await self._venue.rules(position.symbol)
        request = ProtectionRequest(
            symbol=position.symbol, side=position.side, quantity=rules.quantity(position.book.size),
            stop_loss=position.stop_loss, take_profit=position.take_profit,
            stop_loss_id=client_order_id(position.id, f"sl-{generation}"),
            take_profit_id=client_order_id(position.id, f"tp-{generation}"), generation=generation,
        )  # fmt: skip
        try:
            for cid, kind, level, stop_leg in (
                (request.stop_loss_id, OrderType.STOP_LOSS_LIMIT, request.stop_loss, True),
                (request.take_profit_id, OrderType.TAKE_PROFIT_LIMIT, request.take_profit, False),
            ):
                if level is not None:
                    await self._flow.record(
                        cid, position.symbol, position.exit_side, request.quantity,
                        signal_id=position.signal_id, position_id=position.id, order_type=kind, price=level,
                        intent=OrderIntent(IntentKind.PROTECTION, position.id, stop_leg=stop_leg),
                    )  # fmt: skip
            protection = await self._venue.place_protection(request)
        except (OrderRejected, TransientError) as error:
            logger.error("protection failed; closing at market position_id=%s error=%s", position.id, error)
            for cid in (request.stop_loss_id, request.take_profit_id):
                await self._flow.mark_quietly(cid, OrderStatus.FAILED, str(error))
            await self.close_position(position, CloseReason.PROTECTION_FAILED, self._price(position))
            await self._note_quietly(position.signal_id, f"protection could not be placed: {error}")
            return True
        for placed_id, order_id in (
            (protection.stop_loss_id, protection.stop_loss_order_id),
            (protection.take_profit_id, protection.take_profit_order_id),
        ):
            if placed_id is not None:
                await self._trading.mark_order(placed_id, OrderStatus.PENDING, exchange_order_id=order_id)
        protected = replace(position, protection=protection)
        self._positions.put(protected)
        await self._trading.store_protection(position.id, protection)
        self._positions.watch(protected)
        return True

    async def unprotect(self, position: OpenPosition) -> OpenPosition:
        """Cancel the position's resting exits (they lock its quantity). If one had already filled, the
        exchange closed the position: that fill is recorded as the close and the position is forgotten."""
        if not self._venue.supports_protection:
            return position
        for cid in position.protection.client_ids:
            report = await self._venue.cancel(position.symbol, cid)
            if report is not None and report.fill is not None and report.state is OrderState.FILLED:
                await self._record_exchange_exit(report, position, cid)
                return position
            await self._flow.mark_quietly(cid, OrderStatus.CANCELLED, None)
        cleared = replace(position, protection=Protection(generation=position.protection.generation))
        if position.id in self._positions:
            self._positions.put(cleared)
        return cleared

    @contextlib.asynccontextmanager
    async def unguarded(self, position: OpenPosition) -> AsyncIterator[OpenPosition | None]:
        """Lift the position's exits for an order that changes it, and rest them again after the block if the
        position is still open. Yields None when an exchange-side exit closed it meanwhile (recorded)."""
        cleared = await self.unprotect(position)
        if cleared.id not in self._positions:
            yield None
            return
        yield cleared
        current = self._positions.get(cleared.id)
        if current is not None:
            await self.protect(current, generation=cleared.protection.generation + 1)

    async def reconcile_exchange_exits(self) -> int:
        """Record positions whose exchange-side stop or target filled (each exactly once); put back any
        protection that disappeared without a fill. Returns how many positions closed."""
        guarded = [p for p in self._positions.all() if p.protection.client_ids]
        if not guarded:
            return 0
        open_ids = {report.client_order_id for report in await self._venue.open_orders()}
        closed = 0
        for position in guarded:
            if all(cid in open_ids for cid in position.protection.client_ids):
                continue
            async with self._positions.lock(position.trader_id):
                current = self._positions.get(position.id)
                if current is None:
                    continue
                for cid in current.protection.client_ids:
                    report = await self._venue.lookup(current.symbol, cid)
                    if report is not None and report.state is OrderState.FILLED and report.fill is not None:
                        await self._record_exchange_exit(report, current, cid)
                        closed += 1
                        break
                else:
                    # Gone without a fill (cancelled outside the worker, expired): put protection back.
                    logger.warning("protection missing; placing it again position_id=%s", current.id)
                    await self.protect(
                        replace(current, protection=Protection()),
                        generation=current.protection.generation + 1,
                    )
        return closed

    async def _record_exchange_exit(
        self, report: OrderReport, position: OpenPosition, filled: ClientOrderId
    ) -> None:
        reason = (
            CloseReason.STOP_LOSS if filled == position.protection.stop_loss_id else CloseReason.TAKE_PROFIT
        )
        await self._flow.apply_close_fill(report, position, reason)
        for cid in position.protection.client_ids:
            if cid != filled:
                await self._flow.mark_quietly(cid, OrderStatus.CANCELLED, None)

    # Levels -------------------------------------------------------------------------------------------
    async def set_levels(
        self, position: OpenPosition, stop_loss: Decimal | None, take_profit: Decimal | None
    ) -> None:
        """Move a position's stop/target. In real mode the exchange orders are replaced; if the new ones
        cannot be placed, the position is closed at market and the reason recorded (never left unguarded)."""
        async with self.unguarded(position) as current:
            if current is None:
                return
            updated = replace(current, stop_loss=stop_loss, take_profit=take_profit)
            self._positions.put(updated)
            await self._trading.store_levels(updated)

    async def record_trailing(self, position_id: uuid.UUID, state: TrailingState) -> None:
        """Persist a ratcheted trailing stop (the monitor's, throttled); real mode moves the exchange stop up
        to it when it is tighter than the resting stop."""
        position = self._positions.get(position_id)
        if position is None:
            return
        async with self._positions.lock(position.trader_id):
            position = self._positions.get(position_id)
            if position is None:
                return
            position = replace(position, trailing_state=state)
            self._positions.put(position)
        # Written outside the trader's lock: a close of that trader's positions (a stop hit) must not wait
        # for this bookkeeping. If the position closed meanwhile, the write is refused (StaleState).
        await self._trading.store_trailing(position_id, state)
        stop = state.stop_price
        long = position.side is PositionSide.LONG
        tighter = stop is not None and (
            position.stop_loss is None or (stop > position.stop_loss if long else stop < position.stop_loss)
        )
        if self._venue.supports_protection and tighter:
            async with self._positions.lock(position.trader_id):
                current = self._positions.get(position_id)
                if current is not None:
                    await self.set_levels(current, stop, current.take_profit)

    # Closing ------------------------------------------------------------------------------------------
    async def close_position(
        self,
        position: OpenPosition,
        reason: CloseReason,
        price: Decimal,
        *,
        origin: uuid.UUID | None = None,
        leg: str = "close",
        close_signal: bool = True,
    ) -> bool:
        """Close the whole position at market (or record the exchange-side exit that already closed it).

        Returns True when the position is closed (by us now, or found closed on the exchange).
        """
        async with self.unguarded(position) as current:
            if current is None:
                return True
            rules = await self._venue.rules(current.symbol)
            quantity = rules.quantity(current.book.size)
            # Exits of a position are derived from the position when no analysis caused them (the monitor).
            cid = client_order_id(origin or current.id, leg if origin else f"exit-{reason.value}")
            submitted = await self._flow.submit(
                cid, current.symbol, current.exit_side, quantity, price, signal_id=current.signal_id,
                position_id=current.id, intent=OrderIntent(IntentKind.CLOSE, current.id, reason=reason),
            )  # fmt: skip
            if submitted.replayed:
                self._positions.forget(current.id)
                return True
            if submitted.report is None or submitted.report.fill is None:
                logger.error(
                    "close failed position_id=%s reason=%s error=%s", current.id, reason, submitted.error
                )
                return False  # the exits rest again as the block ends
            await self._flow.apply_close_fill(submitted.report, current, reason, close_signal=close_signal)
            return True

    async def close_for_monitor(self, position_id: uuid.UUID, reason: CloseReason, price: Decimal) -> None:
        """The monitor's exit: close at market (no-op if it is already gone), holding the trader's lock
        shared: the trader's other exits go at once, a decision waits for all of them."""
        position = self._positions.get(position_id)
        if position is None:
            return
        async with self._positions.exit_lock(position.trader_id):
            position = self._positions.get(position_id)
            if position is not None:
                await self.close_position(position, reason, price)

    def _price(self, position: OpenPosition) -> Decimal:
        return self._prices.last_price(position.symbol) or position.book.entry_price

    async def _note_quietly(self, signal_id: uuid.UUID, note: str) -> None:
        try:
            await self._signals.set_state(signal_id, refusal=note[:MAX_NOTE_CHARS])
        except WorkerError as failure:
            logger.warning("could not record on signal signal_id=%s error=%s", signal_id, failure)
