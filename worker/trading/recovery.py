"""Recovery at start: load open positions, finish or fail orders left pending by a crash, reconcile with
the venue (real mode: by client order id), seed the guardrails, re-arm the monitor, and report."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta

from worker.clock import MarketTime, day_start
from worker.db.signals import SignalStore
from worker.db.trading import PendingOrder, TradingStore
from worker.domain.enums import OrderStatus, SignalStatus, TradingMode
from worker.domain.orders import ClientOrderId, OrderReport, OrderState
from worker.domain.positions import CloseReason, IntentKind, OpenPosition, Protection
from worker.errors import WorkerError
from worker.trading.config import TradingConfig
from worker.trading.guardrails import Guardrails
from worker.trading.orders import OrderFlow
from worker.trading.positions import OpenPositions
from worker.trading.protection import Protector
from worker.trading.venue import Venue

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    mode: TradingMode
    open_positions: int
    watching_signals: int
    pending_completed: int  # found executed at the venue and recorded now
    pending_failed: int  # never executed: recorded as failed
    exchange_exits: int  # stops/targets that filled while the worker was down
    protection_placed: int  # positions whose exchange-side protection was put back


class Recovery:
    """Brings the positions in memory and the venue in line with the database (idempotent)."""

    def __init__(
        self,
        trading: TradingStore,
        signals: SignalStore,
        venue: Venue,
        *,
        positions: OpenPositions,
        flow: OrderFlow,
        protector: Protector,
        guardrails: Guardrails,
        config: TradingConfig,
        clock: MarketTime,
    ) -> None:
        self._trading = trading
        self._signals = signals
        self._venue = venue
        self._positions = positions
        self._flow = flow
        self._protector = protector
        self._guardrails = guardrails
        self._config = config
        self._clock = clock

    async def run(self) -> RecoveryReport:
        self._positions.reset(await self._trading.open_positions())
        completed = failed = 0
        for order in await self._trading.pending_orders():
            done = await self._resolve_pending(order)
            completed += done is True
            failed += done is False
        await self._seed_guardrails()
        await self._close_orphaned_signals()
        exits = await self._protector.reconcile_exchange_exits()
        placed = 0
        for position in self._positions.all():
            unguarded = not position.protection.client_ids
            if unguarded and (position.stop_loss is not None or position.take_profit is not None):
                placed += await self._protector.protect(
                    position, generation=position.protection.generation + 1
                )
        watching = await self._signals.count(SignalStatus.WATCHING)
        report = RecoveryReport(
            self._venue.mode, len(self._positions), watching, completed, failed, exits, placed
        )
        logger.info(
            "trading recovered mode=%s open_positions=%d watching_signals=%d pending_completed=%d"
            " pending_failed=%d exchange_exits=%d protection_placed=%d",
            report.mode, report.open_positions, report.watching_signals, report.pending_completed,
            report.pending_failed, report.exchange_exits, report.protection_placed,
        )  # fmt: skip
        return report

    async def _resolve_pending(self, order: PendingOrder) -> bool | None:
        """Finish one order a crash left pending: True if recorded as executed, False if failed, None if it is
        a resting protective order that stays."""
        cid, symbol, intent = order.client_order_id, order.symbol, order.intent
        kind = intent.kind if intent is not None else None
        report = await self._venue.lookup(symbol, cid)
        position = self._positions.get(intent.position_id) if intent and intent.position_id else None
        if intent is not None and kind is IntentKind.PROTECTION:
            return await self._resolve_protection(cid, symbol, report, position, stop_leg=intent.stop_leg)
        if report is None or report.fill is None or report.fill.quantity <= 0:
            message = "not executed: the worker stopped before the order was filled"
            await self._trading.mark_order(cid, OrderStatus.FAILED, error_message=message)
            if kind is IntentKind.OPEN and order.signal_id is not None:
                await self._refuse_entry(order.signal_id, cid, message)
            logger.info("pending order failed client_order_id=%s kind=%s", cid, kind)
            return False
        logger.info("pending order found executed client_order_id=%s kind=%s", cid, kind)
        if intent is not None and kind is IntentKind.OPEN:
            assert intent.position_id and intent.trader_id and intent.side and order.signal_id
            opened = await self._flow.apply_entry_fill(
                report,
                position_id=intent.position_id,
                signal_id=order.signal_id,
                trader_id=intent.trader_id,
                symbol=symbol,
                side=intent.side,
                stop_loss=intent.stop_loss,
                take_profit=intent.take_profit,
                trailing=intent.trailing,
                metadata={
                    "analysis_id": str(intent.analysis_id) if intent.analysis_id else None,
                    "recovered": True,
                },
            )
            await self._protector.guard_new(opened)
            return True
        if position is None:
            message = "executed for a position that is not open"
            await self._trading.mark_order(cid, OrderStatus.FAILED, error_message=message)
            return False
        if kind is IntentKind.CLOSE:
            assert intent is not None and intent.reason is not None
            await self._flow.apply_close_fill(report, position, intent.reason)
        else:
            updated = await self._flow.apply_change_fill(
                report, position, increase=kind is IntentKind.INCREASE
            )
            # Its exits were lifted for this order: rest them again below.
            self._positions.put(
                replace(updated, protection=Protection(generation=updated.protection.generation))
            )
        return True

    async def _refuse_entry(self, signal_id: uuid.UUID, cid: ClientOrderId, message: str) -> None:
        status = SignalStatus.CLOSED if await self._signals.status(signal_id) is SignalStatus.NEW else None
        try:
            await self._signals.set_state(signal_id, status=status, close_reason=message, refusal=message)
        except WorkerError as error:
            logger.warning("could not record on signal client_order_id=%s error=%s", cid, error)

    async def _resolve_protection(
        self,
        cid: ClientOrderId,
        symbol: str,
        report: OrderReport | None,
        position: OpenPosition | None,
        *,
        stop_leg: bool,
    ) -> bool | None:
        guarded = position is not None and cid in position.protection.client_ids
        if report is not None and report.is_open and not guarded:
            # Placed, but the crash came before the position learned about it: an orphan; cancel it.
            report = await self._venue.cancel(symbol, cid)
        if report is not None and report.state is OrderState.FILLED and report.fill and position is not None:
            stop = cid == position.protection.stop_loss_id or stop_leg
            reason = CloseReason.STOP_LOSS if stop else CloseReason.TAKE_PROFIT
            await self._flow.apply_close_fill(report, position, reason)
            return True
        if report is not None and report.is_open:
            return None
        status = OrderStatus.CANCELLED if report is not None else OrderStatus.FAILED
        message = "not placed: the worker stopped before the exchange accepted it"
        await self._trading.mark_order(cid, status, error_message=message)
        return False

    async def _close_orphaned_signals(self) -> None:
        # A crash between a flip's two legs leaves the signal position_open with no open position: the flip
        # is recorded (the closed position says `flip`), so close the signal and say why.
        held = {position.signal_id for position in self._positions.all()}
        for signal_id in await self._signals.ids_with(SignalStatus.POSITION_OPEN):
            if signal_id in held:
                continue
            reason = "no open position after restart (interrupted flip or close)"
            try:
                await self._signals.set_state(signal_id, status=SignalStatus.CLOSED, close_reason=reason)
            except WorkerError as error:
                logger.warning("could not close signal signal_id=%s error=%s", signal_id, error)

    async def _seed_guardrails(self) -> None:
        # The guardrails keep market time; rows carry the database's (wall) time: mapped by their age.
        market = self._clock
        now = market.now()
        cooldown_start = now - timedelta(seconds=self._config.symbol_cooldown_secs)
        for closed in await self._trading.closed_since(market.to_wall(cooldown_start)):
            self._guardrails.record_close(closed.trader_id, closed.symbol, market.to_market(closed.closed_at))
        for realized in await self._trading.realized_since(market.to_wall(day_start(now))):
            self._guardrails.record_realized(realized.trader_id, realized.net, now)
