"""The trade executor: turns each validated decision into orders and state, for all eleven decisions.

Every order is recorded (trades row, status pending, with its intent) before it is sent, under an id
derived from the analysis that caused it; every fill is applied with one transition RPC. A retried decision
therefore finds its orders already recorded or filled and acts at most once. Work for one trader is
serialised by a lock, so the monitor and the decision path never act on the same position at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Protocol

from worker.clock import Clock, LiveClock
from worker.domain.decision import Decision
from worker.domain.enums import (
    AnalysisDecision,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionSide,
    SignalStatus,
    TradingMode,
)
from worker.domain.trader import Trader
from worker.errors import OrderRejected, TransientError, WorkerError
from worker.execution import SignalContext
from worker.trading import ledger
from worker.trading.config import TradingConfig
from worker.trading.guardrails import Guardrails, Refusal
from worker.trading.model import (
    ClientOrderId,
    CloseReason,
    OpenPosition,
    OrderReport,
    OrderState,
    Protection,
    ProtectionRequest,
    TrailingMode,
    TrailingSpec,
    TrailingState,
    client_order_id,
    derived_id,
    entry_side,
    opposite,
)
from worker.trading.money import HUNDRED, ONE, ZERO, exact, plain
from worker.trading.store import StaleState, TradingStore
from worker.trading.venue import Venue

logger = logging.getLogger(__name__)

DEFAULT_CLOSE_FRACTION = Decimal("0.5")
ENTRY_DECISIONS = frozenset({AnalysisDecision.OPEN_LONG, AnalysisDecision.OPEN_SHORT})


class PositionWatcher(Protocol):
    """What the executor tells the position monitor."""

    def track(self, position: OpenPosition) -> None: ...

    def untrack(self, position_id: uuid.UUID) -> None: ...


class PriceSource(Protocol):
    def last_price(self, symbol: str) -> Decimal | None:
        """The newest fresh price for `symbol`, or None when there is none."""
        ...

    def atr(self, symbol: str) -> Decimal | None:
        """The latest ATR for trailing stops in ATR mode (None when not available)."""
        ...


@dataclass(frozen=True, slots=True)
class _Submitted:
    report: OrderReport | None  # None: failed (error) or already applied (replayed)
    replayed: bool = False
    error: str | None = None


class TradeExecutor:
    """Implements `worker.execution.DecisionExecutor`; also closes positions for the monitor."""

    def __init__(
        self,
        store: TradingStore,
        venue: Venue,
        guardrails: Guardrails,
        config: TradingConfig,
        prices: PriceSource,
        *,
        clock: Clock | None = None,
        traders: Callable[[uuid.UUID], Trader | None] | None = None,
    ) -> None:
        self.store = store
        self.venue = venue
        self.guardrails = guardrails
        self.config = config
        self.prices = prices
        self.clock = clock or LiveClock()
        self.watcher: PositionWatcher | None = None
        self._traders = traders
        self.positions: dict[uuid.UUID, OpenPosition] = {}
        self._locks: dict[uuid.UUID, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.decisions_applied = 0

    @property
    def mode(self) -> TradingMode:
        return self.venue.mode

    # DecisionExecutor ---------------------------------------------------------------------------------
    async def execute(self, context: SignalContext, decision: Decision) -> None:
        """Act on `decision` for the signal; idempotent per analysis (a retry acts at most once)."""
        self.guardrails.record_analysis_success(context.trader.id)
        async with self._locks[context.trader.id]:
            await self._dispatch(context, decision)
        self.decisions_applied += 1

    def record_analysis_failure(self, trader_id: uuid.UUID, reason: str = "") -> None:
        """Count an analysis that failed (for safe mode); callers that analyse report their failures here."""
        self.guardrails.record_analysis_failure(trader_id, reason)

    def position_for_signal(self, signal_id: uuid.UUID) -> OpenPosition | None:
        return next((p for p in self.positions.values() if p.signal_id == signal_id), None)

    def trader_positions(self, trader_id: uuid.UUID) -> list[OpenPosition]:
        return [p for p in self.positions.values() if p.trader_id == trader_id]

    async def _dispatch(self, context: SignalContext, decision: Decision) -> None:
        kind = decision.decision
        position = self.position_for_signal(context.signal_id)
        logger.info(
            "decision signal_id=%s trader_id=%s symbol=%s decision=%s analysis_id=%s position_id=%s",
            context.signal_id, context.trader.id, context.symbol, kind, context.analysis_id,
            position.id if position else None,
        )  # fmt: skip
        price = self.prices.last_price(context.symbol) or context.last_price
        if kind is AnalysisDecision.NO_TRADE:
            if position is None:
                await self._close_signal(context.signal_id, f"no_trade: {decision.reasoning}")
            return
        if kind is AnalysisDecision.WATCH:
            if position is None:
                await self._set_signal(context.signal_id, status=SignalStatus.WATCHING)
            return
        if kind in ENTRY_DECISIONS:
            if position is not None:
                if position.id != derived_id(context.analysis_id, "position"):
                    await self._refuse(
                        context.signal_id, Refusal("position_open", "the signal already has a position")
                    )
                return
            side = PositionSide.LONG if kind is AnalysisDecision.OPEN_LONG else PositionSide.SHORT
            await self._open(context, side, decision, price, leg="entry")
            return
        if position is None:
            if not await self._already_done(context):
                await self._refuse(
                    context.signal_id, Refusal("no_position", f"{kind} needs an open position")
                )
            return
        await self._manage(position, decision, price, context)

    async def _manage(
        self, position: OpenPosition, decision: Decision, price: Decimal, context: SignalContext
    ) -> None:
        kind = decision.decision
        if kind is AnalysisDecision.CLOSE:
            await self.close_position(position, CloseReason.DECISION, price, origin=context.analysis_id)
        elif kind in (AnalysisDecision.PARTIAL_CLOSE, AnalysisDecision.SCALE_OUT):
            fraction = (
                decision.close_percentage
                if kind is AnalysisDecision.PARTIAL_CLOSE
                else decision.scale_out_percentage
            )
            await self._reduce(position, fraction or DEFAULT_CLOSE_FRACTION, price, context)
        elif kind is AnalysisDecision.SCALE_IN:
            await self._scale_in(position, decision.scale_in_amount or ONE, price, context)
        elif kind is AnalysisDecision.UPDATE_STOP_LOSS:
            await self._move_levels(position, price, context, stop_loss=decision.new_stop_loss)
        elif kind is AnalysisDecision.UPDATE_TAKE_PROFIT:
            await self._move_levels(position, price, context, take_profit=decision.new_take_profit)
        elif kind is AnalysisDecision.FLIP_POSITION:
            await self._flip(position, decision, price, context)

    async def _already_done(self, context: SignalContext) -> bool:
        # A replay of a decision that closed its position: the close order is recorded as filled.
        for leg in ("close", "flip-close"):
            row = await self._find_order(client_order_id(context.analysis_id, leg))
            if row is not None and row.get("status") == OrderStatus.FILLED:
                return True
        return False

    async def _find_order(self, cid: ClientOrderId) -> dict[str, Any] | None:
        return await self.store.order(cid)

    # Entries ------------------------------------------------------------------------------------------
    async def _open(
        self,
        context: SignalContext,
        side: PositionSide,
        decision: Decision,
        price: Decimal,
        *,
        leg: str,
        flip: bool = False,
    ) -> OpenPosition | None:
        trader = context.trader
        position_id = derived_id(context.analysis_id, "position" if leg == "entry" else f"{leg}-position")
        cid = client_order_id(context.analysis_id, leg)
        now = self.clock.now()
        refusal = self.guardrails.check_entry(
            trader, context.symbol, self.trader_positions(trader.id), now, flip=flip
        )
        refusal = refusal or _check_levels(side, price, decision.stop_loss, decision.take_profit)
        quantity = ZERO
        if refusal is None:
            try:
                balance = await self._balance()
                notional = self.guardrails.entry_notional(trader, decision.position_size, balance)
                rules = await self.venue.rules(context.symbol)
                with exact():
                    quantity = rules.market_quantity(notional / price, price) if notional > 0 else ZERO
                    cost = (
                        quantity
                        * price
                        * (ONE + self.config.paper_fee_rate + self.config.paper_slippage_rate)
                    )
                if quantity <= 0:
                    refusal = Refusal("balance", f"no balance to commit (balance {plain(balance)} USD)")
                elif self.mode is TradingMode.PAPER and cost > balance:
                    refusal = Refusal("balance", f"{plain(cost)} USD needed, {plain(balance)} USD available")
            except OrderRejected as error:
                refusal = Refusal("exchange_filters", str(error))
        if refusal is not None:
            await self._refuse(context.signal_id, refusal, close_new=not flip)
            return None
        trailing = self._trailing_spec(side, price)
        intent = {
            "kind": "open", "position_id": str(position_id), "trader_id": str(trader.id), "side": side.value,
            "stop_loss": _text(decision.stop_loss), "take_profit": _text(decision.take_profit),
            "analysis_id": str(context.analysis_id), "flip": flip,
            "trailing": _trailing_json(trailing),
        }  # fmt: skip
        submitted = await self._submit(
            cid, context.symbol, entry_side(side), quantity, price,
            signal_id=context.signal_id, position_id=None, intent=intent,
        )  # fmt: skip
        if submitted.replayed:
            return self.positions.get(position_id)
        if submitted.report is None or submitted.report.fill is None:
            await self._refuse(
                context.signal_id, Refusal("order_failed", submitted.error or "no fill"), close_new=not flip
            )
            return None
        return await self.apply_entry_fill(
            submitted.report,
            position_id=position_id,
            signal_id=context.signal_id,
            trader_id=trader.id,
            symbol=context.symbol,
            side=side,
            stop_loss=decision.stop_loss,
            take_profit=decision.take_profit,
            trailing=trailing,
            metadata={"analysis_id": str(context.analysis_id), **({"flipped": True} if flip else {})},
        )

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
        """Record an entry's fill as a new open position, arm the monitor and rest its protection."""
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
        delta = (
            ledger.paper_cash_delta(None, book, fill.price, fee_quote)
            if self.mode is TradingMode.PAPER
            else None
        )
        result = await self.store.apply_fill(
            _fill_json(
                report, position, expected=ZERO, signal_status=SignalStatus.POSITION_OPEN, paper_delta=delta
            )
        )
        if not result.applied and result.position is not None:
            position = position_from_row(result.position, trader_id)
        self.positions[position.id] = position
        if self.watcher is not None:
            self.watcher.track(position)
        logger.info(
            "position opened position_id=%s symbol=%s side=%s size=%s entry_price=%s mode=%s",
            position.id, symbol, side, plain(position.book.size), plain(position.book.entry_price), self.mode,
        )  # fmt: skip
        if self.venue.supports_protection and position.protection == Protection():
            await self._protect(position, generation=1)
        return self.positions.get(position.id, position)

    async def _scale_in(
        self, position: OpenPosition, fraction: Decimal, price: Decimal, context: SignalContext
    ) -> None:
        trader = context.trader
        refusal = self.guardrails.check_add(trader, self.clock.now())
        rules = await self.venue.rules(position.symbol)
        with exact():
            current_notional = position.book.size * price
            room = trader.risk.max_position_size_usd - current_notional
            wanted = position.book.size * min(fraction, ONE)
            add = min(wanted, room / price) if room > 0 else ZERO
        quantity = ZERO
        if refusal is None:
            if add <= 0:
                refusal = Refusal(
                    "max_position_size", f"the position is already {plain(current_notional)} USD"
                )
            else:
                try:
                    quantity = rules.market_quantity(add, price)
                    balance = await self._balance()
                    if self.mode is TradingMode.PAPER and quantity * price > balance:
                        refusal = Refusal(
                            "balance", f"{plain(quantity * price)} USD needed, {plain(balance)} held"
                        )
                except OrderRejected as error:
                    refusal = Refusal("exchange_filters", str(error))
        if refusal is not None:
            await self._refuse(position.signal_id, refusal, close_new=False)
            return
        if self.venue.supports_protection:
            position = await self._unprotect(position)
            if position.id not in self.positions:
                return  # the exchange closed it while we were cancelling
        cid = client_order_id(context.analysis_id, "scale-in")
        submitted = await self._submit(
            cid, position.symbol, position.entry_side, quantity, price, signal_id=position.signal_id,
            position_id=position.id, intent={"kind": "increase", "position_id": str(position.id)},
        )  # fmt: skip
        if submitted.report is not None and submitted.report.fill is not None:
            position = await self.apply_change_fill(submitted.report, position, increase=True)
        elif not submitted.replayed:
            await self._refuse(
                position.signal_id, Refusal("order_failed", submitted.error or "no fill"), close_new=False
            )
        if self.venue.supports_protection and position.id in self.positions:
            await self._protect(self.positions[position.id], generation=position.protection.generation + 1)

    # Exits --------------------------------------------------------------------------------------------
    async def _reduce(
        self, position: OpenPosition, fraction: Decimal, price: Decimal, context: SignalContext
    ) -> None:
        rules = await self.venue.rules(position.symbol)
        with exact():
            quantity = rules.quantity(position.book.size * fraction)
        try:
            rules.check(quantity, price, market=True)
            remaining = position.book.size - quantity
            if remaining > 0:
                rules.check(rules.quantity(remaining), price, market=True)
        except OrderRejected as error:
            await self._refuse(position.signal_id, Refusal("exchange_filters", str(error)), close_new=False)
            return
        if self.venue.supports_protection:
            position = await self._unprotect(position)
            if position.id not in self.positions:
                return
        cid = client_order_id(context.analysis_id, "reduce")
        submitted = await self._submit(
            cid, position.symbol, position.exit_side, quantity, price, signal_id=position.signal_id,
            position_id=position.id, intent={"kind": "reduce", "position_id": str(position.id)},
        )  # fmt: skip
        if submitted.report is not None and submitted.report.fill is not None:
            position = await self.apply_change_fill(submitted.report, position, increase=False)
        elif not submitted.replayed:
            await self._refuse(
                position.signal_id, Refusal("order_failed", submitted.error or "no fill"), close_new=False
            )
        if self.venue.supports_protection and position.id in self.positions:
            await self._protect(self.positions[position.id], generation=position.protection.generation + 1)

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
        delta = (
            ledger.paper_cash_delta(before, book, fill.price, fee_quote)
            if self.mode is TradingMode.PAPER
            else None
        )
        result = await self.store.apply_fill(
            _fill_json(report, updated, expected=before.size, realized=realized, paper_delta=delta)
        )
        if result.applied:
            if realized is not None:
                self.guardrails.record_realized(position.trader_id, realized - fee_quote, self.clock.now())
            self.positions[position.id] = updated
            if self.watcher is not None:
                self.watcher.track(updated)
            return updated
        return position

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
        if self.venue.supports_protection:
            position = await self._unprotect(position)
            if position.id not in self.positions:
                return True  # an exchange-side stop or target closed it; recorded by _unprotect
        rules = await self.venue.rules(position.symbol)
        quantity = rules.quantity(position.book.size)
        # Exits of a position are derived from the position when no analysis caused them (the monitor).
        cid = client_order_id(origin or position.id, leg if origin else f"exit-{reason.value}")
        submitted = await self._submit(
            cid, position.symbol, position.exit_side, quantity, price, signal_id=position.signal_id,
            position_id=position.id,
            intent={"kind": "close", "position_id": str(position.id), "reason": reason.value},
        )  # fmt: skip
        if submitted.replayed:
            self._forget(position.id)
            return True
        if submitted.report is None or submitted.report.fill is None:
            logger.error(
                "close failed position_id=%s reason=%s error=%s", position.id, reason, submitted.error
            )
            if self.venue.supports_protection:
                await self._protect(position, generation=position.protection.generation + 1)
            return False
        await self.apply_close_fill(submitted.report, position, reason, close_signal=close_signal)
        return True

    async def apply_close_fill(
        self, report: OrderReport, position: OpenPosition, reason: CloseReason, *, close_signal: bool = True
    ) -> None:
        """Record the fill that closed `position` (ours or an exchange-side stop), exactly once."""
        fill = report.fill
        assert fill is not None
        before = position.book
        # What the lot grid left unsold (dust) is booked at the exit price with the rest.
        book, realized = ledger.reduce(before, before.size, fill.price, fill.fee_quote)
        closed = replace(position, book=book)
        delta = (
            ledger.paper_cash_delta(before, book, fill.price, fill.fee_quote)
            if self.mode is TradingMode.PAPER
            else None
        )
        result = await self.store.apply_fill(
            _fill_json(
                report, closed, expected=before.size, realized=realized, paper_delta=delta,
                close_reason=reason,
                signal_status=SignalStatus.CLOSED if close_signal else None,
                signal_close_reason=f"position closed: {reason.value}",
            )
        )  # fmt: skip
        now = self.clock.now()
        if result.applied:
            self.guardrails.record_realized(position.trader_id, realized - fill.fee_quote, now)
        self.guardrails.record_close(position.trader_id, position.symbol, now)
        self._forget(position.id)
        logger.info(
            "position closed position_id=%s symbol=%s reason=%s exit_price=%s pnl=%s applied=%s",
            position.id, position.symbol, reason, plain(fill.price), plain(ledger.net_pnl(book)),
            result.applied,
        )  # fmt: skip

    def _forget(self, position_id: uuid.UUID) -> None:
        self.positions.pop(position_id, None)
        if self.watcher is not None:
            self.watcher.untrack(position_id)

    async def close_for_monitor(self, position_id: uuid.UUID, reason: CloseReason, price: Decimal) -> None:
        """The monitor's exit: close at market under the trader's lock (no-op if it is already gone)."""
        position = self.positions.get(position_id)
        if position is None:
            return
        async with self._locks[position.trader_id]:
            position = self.positions.get(position_id)
            if position is not None:
                await self.close_position(position, reason, price)

    # Levels -------------------------------------------------------------------------------------------
    async def _move_levels(
        self,
        position: OpenPosition,
        price: Decimal,
        context: SignalContext,
        *,
        stop_loss: Decimal | None = None,
        take_profit: Decimal | None = None,
    ) -> None:
        new_stop = stop_loss if stop_loss is not None else position.stop_loss
        new_target = take_profit if take_profit is not None else position.take_profit
        refusal = _check_levels(position.side, price, new_stop, new_target)
        if refusal is not None:
            await self._refuse(position.signal_id, refusal, close_new=False)
            return
        await self.set_levels(position, new_stop, new_target)

    async def set_levels(
        self, position: OpenPosition, stop_loss: Decimal | None, take_profit: Decimal | None
    ) -> None:
        """Move a position's stop/target. In real mode the exchange orders are replaced; if the new ones
        cannot be placed, the position is closed at market and the reason recorded (never left unguarded)."""
        updated = replace(position, stop_loss=stop_loss, take_profit=take_profit)
        if self.venue.supports_protection:
            unguarded = await self._unprotect(position)
            if unguarded.id not in self.positions:
                return
            updated = replace(unguarded, stop_loss=stop_loss, take_profit=take_profit)
            self.positions[updated.id] = updated
            await self._store_levels(updated)
            await self._protect(updated, generation=unguarded.protection.generation + 1)
            return
        self.positions[updated.id] = updated
        await self._store_levels(updated)
        if self.watcher is not None:
            self.watcher.track(updated)

    async def _store_levels(self, position: OpenPosition) -> None:
        await self.store.update_position(
            position.id,
            {"stop_loss": _text(position.stop_loss), "take_profit": _text(position.take_profit),
             "metadata": {"protection": _protection_json(position.protection)}},
        )  # fmt: skip

    async def record_trailing(self, position_id: uuid.UUID, state: TrailingState) -> None:
        """Persist a ratcheted trailing stop (called by the monitor, throttled); real mode moves the
        exchange stop up to it when it is tighter than the resting stop."""
        position = self.positions.get(position_id)
        if position is None:
            return
        async with self._locks[position.trader_id]:
            position = self.positions.get(position_id)
            if position is None:
                return
            position = replace(position, trailing_state=state)
            self.positions[position_id] = position
            await self.store.update_position(
                position_id,
                {"trailing_stop_reference_price": _text(state.reference_price),
                 "metadata": {"trailing_stop_price": _text(state.stop_price)}},
            )  # fmt: skip
            stop = state.stop_price
            tighter = stop is not None and (
                position.stop_loss is None
                or (
                    stop > position.stop_loss
                    if position.side is PositionSide.LONG
                    else stop < position.stop_loss
                )
            )
            if self.venue.supports_protection and tighter:
                await self.set_levels(position, stop, position.take_profit)

    # Flip ---------------------------------------------------------------------------------------------
    async def _flip(
        self, position: OpenPosition, decision: Decision, price: Decimal, context: SignalContext
    ) -> None:
        """Close, then open the other side: one logical operation recorded even when the second leg fails."""
        new_side = opposite(position.side)
        refusal = _check_levels(new_side, price, decision.stop_loss, decision.take_profit)
        if refusal is not None:
            await self._refuse(position.signal_id, refusal, close_new=False)
            return
        closed = await self.close_position(
            position,
            CloseReason.FLIP,
            price,
            origin=context.analysis_id,
            leg="flip-close",
            close_signal=False,
        )
        if not closed:
            await self._refuse(
                position.signal_id, Refusal("flip_failed", "the closing leg failed"), close_new=False
            )
            return
        opened = await self._open(context, new_side, decision, price, leg="flip-open", flip=True)
        if opened is None and self.position_for_signal(context.signal_id) is None:
            await self._close_signal(
                context.signal_id, "flip_position: closed; the opposite leg was not opened"
            )

    # Protection (real mode) ---------------------------------------------------------------------------
    async def _protect(self, position: OpenPosition, *, generation: int) -> None:
        """Rest the position's stop and target on the exchange; if that fails, close at market and say why."""
        if position.stop_loss is None and position.take_profit is None:
            return
        rules = await self.venue.rules(position.symbol)
        request = ProtectionRequest(
            symbol=position.symbol, side=position.side, quantity=rules.quantity(position.book.size),
            stop_loss=position.stop_loss, take_profit=position.take_profit,
            stop_loss_id=client_order_id(position.id, f"sl-{generation}"),
            take_profit_id=client_order_id(position.id, f"tp-{generation}"), generation=generation,
        )  # fmt: skip
        try:
            for cid, kind, level, leg in (
                (request.stop_loss_id, OrderType.STOP_LOSS_LIMIT, request.stop_loss, "sl"),
                (request.take_profit_id, OrderType.TAKE_PROFIT_LIMIT, request.take_profit, "tp"),
            ):
                if level is not None:
                    await self.store.record_order(
                        _order_json(cid, position.symbol, position.exit_side, request.quantity, self.mode,
                                    signal_id=position.signal_id, position_id=position.id, order_type=kind,
                                    price=level,
                                    intent={"kind": "protection", "leg": leg,
                                            "position_id": str(position.id)})
                    )  # fmt: skip
            protection = await self.venue.place_protection(request)
        except (OrderRejected, TransientError) as error:
            logger.error("protection failed; closing at market position_id=%s error=%s", position.id, error)
            for cid in (request.stop_loss_id, request.take_profit_id):
                await _mark_quietly(self.store, cid, OrderStatus.FAILED, str(error))
            await self.close_position(
                position, CloseReason.PROTECTION_FAILED, self._price(position), leg="close"
            )
            await _note_quietly(self.store, position.signal_id, f"protection could not be placed: {error}")
            return
        placed = (
            (protection.stop_loss_id, protection.stop_loss_order_id),
            (protection.take_profit_id, protection.take_profit_order_id),
        )
        for placed_id, order_id in placed:
            if placed_id is not None:
                await self.store.mark_order(placed_id, OrderStatus.PENDING, binance_order_id=order_id)
        protected = replace(position, protection=protection)
        self.positions[position.id] = protected
        await self.store.update_position(
            position.id,
            {"stop_loss_order_id": protection.stop_loss_order_id,
             "take_profit_order_id": protection.take_profit_order_id,
             "metadata": {"protection": _protection_json(protection)}},
        )  # fmt: skip
        if self.watcher is not None:
            self.watcher.track(protected)

    async def _unprotect(self, position: OpenPosition) -> OpenPosition:
        """Cancel the position's resting exits (they lock its quantity). If one had already filled, the
        exchange closed the position: that fill is recorded as the close and the position is forgotten."""
        for cid in position.protection.client_ids:
            report = await self.venue.cancel(position.symbol, cid)
            if report is not None and report.fill is not None and report.state is OrderState.FILLED:
                reason = (
                    CloseReason.STOP_LOSS
                    if cid == position.protection.stop_loss_id
                    else CloseReason.TAKE_PROFIT
                )
                await self.apply_close_fill(report, position, reason)
                await self._mark_siblings(position, except_id=cid)
                return position
            status = OrderStatus.CANCELLED
            await _mark_quietly(self.store, cid, status, None)
        cleared = replace(position, protection=Protection(generation=position.protection.generation))
        if position.id in self.positions:
            self.positions[position.id] = cleared
        return cleared

    async def _mark_siblings(self, position: OpenPosition, *, except_id: ClientOrderId) -> None:
        for cid in position.protection.client_ids:
            if cid != except_id:
                await _mark_quietly(self.store, cid, OrderStatus.CANCELLED, None)

    async def reconcile_exchange_exits(self) -> int:
        """Real mode: record positions whose exchange-side stop or target filled (each exactly once)."""
        if not self.venue.supports_protection:
            return 0
        guarded = [p for p in self.positions.values() if p.protection.client_ids]
        if not guarded:
            return 0
        open_ids = {report.client_order_id for report in await self.venue.open_orders()}
        closed = 0
        for position in guarded:
            if all(cid in open_ids for cid in position.protection.client_ids):
                continue
            async with self._locks[position.trader_id]:
                current = self.positions.get(position.id)
                if current is None:
                    continue
                for cid in current.protection.client_ids:
                    report = await self.venue.lookup(current.symbol, cid)
                    if report is not None and report.state is OrderState.FILLED and report.fill is not None:
                        reason = (
                            CloseReason.STOP_LOSS
                            if cid == current.protection.stop_loss_id
                            else CloseReason.TAKE_PROFIT
                        )
                        await self.apply_close_fill(report, current, reason)
                        await self._mark_siblings(current, except_id=cid)
                        closed += 1
                        break
                else:
                    # Gone without a fill (cancelled outside the worker, expired): put protection back.
                    logger.warning("protection missing; placing it again position_id=%s", current.id)
                    await self._protect(
                        replace(current, protection=Protection()),
                        generation=current.protection.generation + 1,
                    )
        return closed

    # Orders -------------------------------------------------------------------------------------------
    async def _submit(
        self,
        cid: ClientOrderId,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        price: Decimal,
        *,
        signal_id: uuid.UUID,
        position_id: uuid.UUID | None,
        intent: dict[str, Any],
    ) -> _Submitted:
        """Record, then send (or find) a MARKET order; a failure is recorded with the venue's message."""
        row = await self.store.record_order(
            _order_json(cid, symbol, side, quantity, self.mode, signal_id=signal_id, position_id=position_id,
                        order_type=OrderType.MARKET, price=None, intent=intent)
        )  # fmt: skip
        status = OrderStatus(row["status"])
        if status is OrderStatus.FILLED:
            return _Submitted(None, replayed=True)
        if status in (OrderStatus.FAILED, OrderStatus.CANCELLED):
            return _Submitted(None, error=row.get("error_message") or "the order failed earlier")
        report = await self.venue.lookup(symbol, cid)
        if report is None:
            try:
                report = await self.venue.market_order(cid, symbol, side, quantity, price)
            except OrderRejected as error:
                await self.store.mark_order(cid, OrderStatus.FAILED, error_message=str(error))
                return _Submitted(None, error=str(error))
        if report.fill is None or report.fill.quantity <= 0:
            message = f"order ended {report.state} without a fill"
            await self.store.mark_order(
                cid, OrderStatus.FAILED, binance_order_id=report.exchange_order_id, error_message=message
            )
            return _Submitted(None, error=message)
        return _Submitted(report)

    # Signals ----------------------------------------------------------------------------------------
    async def _refuse(self, signal_id: uuid.UUID, refusal: Refusal, *, close_new: bool = True) -> None:
        """Record why a decision was not carried out; a `new` signal is closed with that reason."""
        logger.info("decision refused signal_id=%s %s", signal_id, refusal)
        status = None
        if close_new:
            row = await self.store.signal(signal_id)
            if row is not None and row.get("status") == SignalStatus.NEW:
                status = SignalStatus.CLOSED
        try:
            await self.store.set_signal(
                signal_id, status=status, close_reason=str(refusal), refusal=str(refusal)
            )
        except StaleState as error:
            logger.warning("could not record refusal signal_id=%s error=%s", signal_id, error)

    async def _close_signal(self, signal_id: uuid.UUID, reason: str) -> None:
        try:
            await self.store.set_signal(signal_id, status=SignalStatus.CLOSED, close_reason=reason[:500])
        except StaleState as error:
            logger.warning("signal not closed signal_id=%s error=%s", signal_id, error)

    async def _set_signal(self, signal_id: uuid.UUID, *, status: SignalStatus) -> None:
        try:
            await self.store.set_signal(signal_id, status=status)
        except StaleState as error:
            logger.warning("signal not moved to %s signal_id=%s error=%s", status, signal_id, error)

    # Helpers ----------------------------------------------------------------------------------------
    async def _balance(self) -> Decimal:
        if self.mode is TradingMode.PAPER:
            return await self.store.paper_balance()
        balances = await self.venue.balances()  # type: ignore[attr-defined]
        free, _ = balances.get("USDT", (ZERO, ZERO))
        return Decimal(free)

    def _price(self, position: OpenPosition) -> Decimal:
        return self.prices.last_price(position.symbol) or position.book.entry_price

    def _trailing_spec(self, side: PositionSide, price: Decimal) -> TrailingSpec | None:
        mode = self.config.trailing_mode
        if mode is None:
            return None
        activation = None
        if self.config.trailing_activation_fraction > 0:
            with exact():
                move = self.config.trailing_activation_fraction
                activation = price * (ONE + move) if side is PositionSide.LONG else price * (ONE - move)
        return TrailingSpec(mode, self.config.trailing_distance, activation)


# JSON for the transition functions ------------------------------------------------------------------
def _text(value: Decimal | None) -> str | None:
    return None if value is None else plain(value)


def _check_levels(
    side: PositionSide, price: Decimal, stop_loss: Decimal | None, take_profit: Decimal | None
) -> Refusal | None:
    long = side is PositionSide.LONG
    if stop_loss is not None and (stop_loss >= price if long else stop_loss <= price):
        where = "below" if long else "above"
        return Refusal(
            "levels", f"stop-loss {plain(stop_loss)} must be {where} the price {plain(price)} for a {side}"
        )
    if take_profit is not None and (take_profit <= price if long else take_profit >= price):
        where = "above" if long else "below"
        return Refusal(
            "levels",
            f"take-profit {plain(take_profit)} must be {where} the price {plain(price)} for a {side}",
        )
    return None


def _order_json(
    cid: ClientOrderId,
    symbol: str,
    side: OrderSide,
    quantity: Decimal,
    mode: TradingMode,
    *,
    signal_id: uuid.UUID,
    position_id: uuid.UUID | None,
    order_type: OrderType,
    price: Decimal | None,
    intent: dict[str, Any],
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_OID, cid)),
        "client_order_id": cid,
        "signal_id": str(signal_id),
        "position_id": str(position_id) if position_id else None,
        "type": mode.value,
        "side": side.value,
        "order_type": order_type.value,
        "symbol": symbol,
        "price": _text(price),
        "quantity": plain(quantity),
        "intent": intent,
    }


def _trailing_json(spec: TrailingSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    return {
        "mode": spec.mode.value,
        "distance": plain(spec.distance),
        "activation_price": _text(spec.activation_price),
    }


def _protection_json(protection: Protection) -> dict[str, Any]:
    return {
        "stop_loss_id": protection.stop_loss_id,
        "take_profit_id": protection.take_profit_id,
        "stop_loss_order_id": protection.stop_loss_order_id,
        "take_profit_order_id": protection.take_profit_order_id,
        "generation": protection.generation,
    }


def position_json(
    position: OpenPosition, *, close_reason: CloseReason | None = None, exit_price: Decimal | None = None
) -> dict[str, Any]:
    """The positions row (and metadata) for `position`'s current book."""
    book = position.book
    closed = not book.is_open
    return {
        "id": str(position.id),
        "signal_id": str(position.signal_id),
        "symbol": position.symbol,
        "side": book.side.value,
        "type": position.mode.value,
        "entry_price": plain(book.entry_price),
        "size": plain(book.size),
        **position.levels_json(),
        "realized_pnl": plain(book.realized_pnl),
        "fees_paid": plain(book.fees_paid),
        "status": "closed" if closed else "open",
        "exit_price": _text(exit_price) if closed else None,
        "pnl": plain(ledger.net_pnl(book)) if closed else None,
        "pnl_percent": plain(ledger.pnl_percent(book)) if closed else None,
        "close_reason": close_reason.value if closed and close_reason else None,
        "metadata": {
            **position.metadata,
            "trader_id": str(position.trader_id),
            "cost_basis": plain(book.cost_basis),
            "entry_cost_total": plain(book.entry_cost_total),
            "trailing": _trailing_json(position.trailing),
            "trailing_stop_price": _text(position.trailing_state.stop_price),
            "protection": _protection_json(position.protection),
        },
    }


def _fill_json(
    report: OrderReport,
    position: OpenPosition,
    *,
    expected: Decimal,
    realized: Decimal | None = None,
    paper_delta: Decimal | None = None,
    close_reason: CloseReason | None = None,
    signal_status: SignalStatus | None = None,
    signal_close_reason: str | None = None,
) -> dict[str, Any]:
    fill = report.fill
    assert fill is not None
    return {
        "client_order_id": report.client_order_id,
        "price": plain(fill.price),
        "quantity": plain(fill.quantity),
        "fee": plain(fill.fee),
        "fee_asset": fill.fee_asset,
        "binance_order_id": report.exchange_order_id if position.mode is TradingMode.REAL else None,
        "realized_pnl": _text(realized),
        "expected_size": plain(expected),
        "position": position_json(position, close_reason=close_reason, exit_price=fill.price),
        "signal_status": signal_status.value if signal_status else None,
        "signal_close_reason": signal_close_reason,
        "paper_balance_delta": _text(paper_delta),
    }


def position_from_row(row: dict[str, Any], trader_id: uuid.UUID | None = None) -> OpenPosition:
    """Rebuild an open position from its row (exact: the book's cost comes from metadata)."""
    metadata = dict(row.get("metadata") or {})
    side = PositionSide(row["side"])
    size = Decimal(str(row["size"]))
    entry_price = Decimal(str(row["entry_price"]))
    with exact():
        cost = Decimal(str(metadata.get("cost_basis", size * entry_price)))
        entry_cost_total = Decimal(str(metadata.get("entry_cost_total", cost)))
    book = ledger.Book(
        side, size, cost, entry_price, Decimal(str(row.get("realized_pnl") or 0)),
        Decimal(str(row.get("fees_paid") or 0)), entry_cost_total,
    )  # fmt: skip
    trailing_json = metadata.get("trailing")
    trailing = None
    if isinstance(trailing_json, dict):
        activation = trailing_json.get("activation_price")
        trailing = TrailingSpec(
            TrailingMode(trailing_json["mode"]),
            Decimal(str(trailing_json["distance"])),
            Decimal(str(activation)) if activation is not None else None,
        )
    reference = row.get("trailing_stop_reference_price")
    stop = metadata.get("trailing_stop_price")
    protection_json = metadata.get("protection") or {}
    protection = Protection(
        protection_json.get("stop_loss_id"),
        protection_json.get("take_profit_id"),
        protection_json.get("stop_loss_order_id"),
        protection_json.get("take_profit_order_id"),
        int(protection_json.get("generation", 0)),
    )
    owner = trader_id or uuid.UUID(
        str(metadata.get("trader_id") or (row.get("signals") or {}).get("trader_id"))
    )
    keep = {k: v for k, v in metadata.items() if k in ("analysis_id", "flipped")}
    return OpenPosition(
        id=uuid.UUID(str(row["id"])),
        signal_id=uuid.UUID(str(row["signal_id"])),
        trader_id=owner,
        symbol=str(row["symbol"]),
        mode=TradingMode(row.get("type", "paper")),
        book=book,
        stop_loss=_decimal(row.get("stop_loss")),
        take_profit=_decimal(row.get("take_profit")),
        trailing=trailing,
        trailing_state=TrailingState(_decimal(reference), _decimal(stop)),
        protection=protection,
        metadata=keep,
    )


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


async def _mark_quietly(
    store: TradingStore, cid: ClientOrderId, status: OrderStatus, error: str | None
) -> None:
    try:
        await store.mark_order(cid, status, error_message=error)
    except WorkerError as failure:
        logger.warning("could not mark order client_order_id=%s status=%s error=%s", cid, status, failure)


async def _note_quietly(store: TradingStore, signal_id: uuid.UUID, note: str) -> None:
    try:
        await store.set_signal(signal_id, refusal=note[:500])
    except WorkerError as failure:
        logger.warning("could not record on signal signal_id=%s error=%s", signal_id, failure)


def percent(part: Decimal, whole: Decimal) -> Decimal:
    with exact():
        return part * HUNDRED / whole if whole else ZERO
