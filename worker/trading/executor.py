"""The trade executor: routes each validated decision (all eleven) to the orders and state it needs.

Entries, scale-ins, partial exits, closes, level moves and flips are decided here, checked against the
guardrails, and carried out through the order flow (record -> send -> apply fill) and protection (the
position's exits lifted around each order). Every order id derives from the analysis that caused it, so a
retried decision acts at most once. Work for one trader is serialised by its lock in the positions
registry, so the monitor and the decision path never act on the same position at once. A decision that
is not carried out is recorded on its signal with the rule that refused it.
"""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal
from typing import Final

from worker.clock import Clock
from worker.db.client import StaleState
from worker.db.signals import SignalStore
from worker.db.trading import TradingStore
from worker.domain.decision import Decision
from worker.domain.enums import AnalysisDecision, OrderStatus, PositionSide, SignalStatus, TradingMode
from worker.domain.money import ONE, ZERO, exact, plain
from worker.domain.orders import client_order_id, derived_id
from worker.domain.positions import (
    CloseReason,
    IntentKind,
    OpenPosition,
    OrderIntent,
    TrailingSpec,
    entry_side,
    opposite,
)
from worker.domain.signal import SignalContext
from worker.errors import OrderRejected
from worker.trading.config import TradingConfig
from worker.trading.guardrails import Guardrails, Refusal, check_mode
from worker.trading.orders import OrderFlow
from worker.trading.positions import OpenPositions
from worker.trading.prices import PriceSource
from worker.trading.protection import Protector

logger = logging.getLogger(__name__)

DEFAULT_CLOSE_FRACTION: Final = Decimal("0.5")
ENTRY_DECISIONS: Final = frozenset({AnalysisDecision.OPEN_LONG, AnalysisDecision.OPEN_SHORT})
MAX_REASON_CHARS: Final = 500  # signals_close_reason_length


class TradeExecutor:
    """Implements the signal engine's DecisionExecutor: acts on decisions, idempotent per analysis."""

    def __init__(
        self,
        flow: OrderFlow,
        protector: Protector,
        positions: OpenPositions,
        guardrails: Guardrails,
        *,
        signals: SignalStore,
        trading: TradingStore,
        prices: PriceSource,
        config: TradingConfig,
        clock: Clock,
    ) -> None:
        self._flow = flow
        self._protector = protector
        self._positions = positions
        self._guardrails = guardrails
        self._signals = signals
        self._trading = trading
        self._prices = prices
        self._config = config
        self._clock = clock

    # DecisionExecutor ---------------------------------------------------------------------------------
    async def execute(self, context: SignalContext, decision: Decision) -> None:
        """Act on `decision` for the signal; idempotent per analysis (a retry acts at most once)."""
        self._guardrails.record_analysis_success(context.trader.id)
        async with self._positions.lock(context.trader.id):
            await self._dispatch(context, decision)

    def record_analysis_failure(self, trader_id: uuid.UUID, reason: str = "") -> None:
        """Count an analysis that failed (for safe mode); callers that analyse report their failures here."""
        self._guardrails.record_analysis_failure(trader_id, reason)

    async def _dispatch(self, context: SignalContext, decision: Decision) -> None:
        kind = decision.decision
        position = self._positions.for_signal(context.signal_id)
        logger.info(
            "decision signal_id=%s trader_id=%s symbol=%s decision=%s analysis_id=%s position_id=%s",
            context.signal_id, context.trader.id, context.symbol, kind, context.analysis_id,
            position.id if position else None,
        )  # fmt: skip
        price = self._prices.last_price(context.symbol) or context.last_price
        if kind is AnalysisDecision.NO_TRADE:
            if position is None:
                await self._close_signal(context.signal_id, f"no_trade: {decision.reasoning}")
            return
        if kind is AnalysisDecision.WATCH:
            if position is None:
                await self._watch_signal(context.signal_id)
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
            await self._protector.close_position(
                position, CloseReason.DECISION, price, origin=context.analysis_id
            )
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
            await self._move_levels(position, price, stop_loss=decision.new_stop_loss)
        elif kind is AnalysisDecision.UPDATE_TAKE_PROFIT:
            await self._move_levels(position, price, take_profit=decision.new_take_profit)
        elif kind is AnalysisDecision.FLIP_POSITION:
            await self._flip(position, decision, price, context)

    async def _already_done(self, context: SignalContext) -> bool:
        # A replay of a decision that closed its position: the close order is recorded as filled.
        for leg in ("close", "flip-close"):
            status = await self._trading.order_status(client_order_id(context.analysis_id, leg))
            if status is OrderStatus.FILLED:
                return True
        return False

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
        refusal = check_mode(trader, self._flow.mode) or self._guardrails.check_entry(
            trader, context.symbol, self._positions.of_trader(trader.id), self._clock.now(), flip=flip
        )
        refusal = refusal or _check_levels(side, price, decision.stop_loss, decision.take_profit)
        quantity = ZERO
        if refusal is None:
            try:
                balance = await self._flow.balance()
                notional = self._guardrails.entry_notional(trader, decision.position_size, balance)
                rules = await self._flow.rules(context.symbol)
                with exact():
                    quantity = rules.market_quantity(notional / price, price) if notional > 0 else ZERO
                    fees = ONE + self._config.paper_fee_rate + self._config.paper_slippage_rate
                    cost = quantity * price * fees
                if quantity <= 0:
                    refusal = Refusal("balance", f"no balance to commit (balance {plain(balance)} USD)")
                elif self._overdraws(cost, balance):
                    refusal = Refusal("balance", f"{plain(cost)} USD needed, {plain(balance)} USD available")
            except OrderRejected as error:
                refusal = Refusal("exchange_filters", str(error))
        if refusal is not None:
            await self._refuse(context.signal_id, refusal, close_new=not flip)
            return None
        trailing = self._trailing_spec(side, price)
        intent = OrderIntent(
            IntentKind.OPEN, position_id, trader_id=trader.id, side=side, stop_loss=decision.stop_loss,
            take_profit=decision.take_profit, analysis_id=context.analysis_id, flip=flip, trailing=trailing,
        )  # fmt: skip
        submitted = await self._flow.submit(
            client_order_id(context.analysis_id, leg), context.symbol, entry_side(side), quantity, price,
            signal_id=context.signal_id, position_id=None, intent=intent,
        )  # fmt: skip
        if submitted.replayed:
            return self._positions.get(position_id)
        if submitted.report is None or submitted.report.fill is None:
            await self._refuse(
                context.signal_id, Refusal("order_failed", submitted.error or "no fill"), close_new=not flip
            )
            return None
        position = await self._flow.apply_entry_fill(
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
        return await self._protector.guard_new(position)

    async def _scale_in(
        self, position: OpenPosition, fraction: Decimal, price: Decimal, context: SignalContext
    ) -> None:
        trader = context.trader
        refusal = check_mode(trader, self._flow.mode) or self._guardrails.check_add(trader, self._clock.now())
        rules = await self._flow.rules(position.symbol)
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
                    balance = await self._flow.balance()
                    if self._overdraws(quantity * price, balance):
                        refusal = Refusal(
                            "balance", f"{plain(quantity * price)} USD needed, {plain(balance)} held"
                        )
                except OrderRejected as error:
                    refusal = Refusal("exchange_filters", str(error))
        if refusal is not None:
            await self._refuse(position.signal_id, refusal, close_new=False)
            return
        await self._change(position, context, quantity, price, increase=True)

    # Exits --------------------------------------------------------------------------------------------
    async def _reduce(
        self, position: OpenPosition, fraction: Decimal, price: Decimal, context: SignalContext
    ) -> None:
        rules = await self._flow.rules(position.symbol)
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
        await self._change(position, context, quantity, price, increase=False)

    async def _change(
        self,
        position: OpenPosition,
        context: SignalContext,
        quantity: Decimal,
        price: Decimal,
        *,
        increase: bool,
    ) -> None:
        """Scale in or out by `quantity` at market, the position's exits lifted around the order."""
        leg, kind = ("scale-in", IntentKind.INCREASE) if increase else ("reduce", IntentKind.REDUCE)
        async with self._protector.unguarded(position) as current:
            if current is None:
                return  # the exchange closed it while we were cancelling
            submitted = await self._flow.submit(
                client_order_id(context.analysis_id, leg), current.symbol,
                current.entry_side if increase else current.exit_side, quantity, price,
                signal_id=current.signal_id, position_id=current.id, intent=OrderIntent(kind, current.id),
            )  # fmt: skip
            if submitted.report is not None and submitted.report.fill is not None:
                await self._flow.apply_change_fill(submitted.report, current, increase=increase)
            elif not submitted.replayed:
                failure = Refusal("order_failed", submitted.error or "no fill")
                await self._refuse(current.signal_id, failure, close_new=False)

    async def _move_levels(
        self,
        position: OpenPosition,
        price: Decimal,
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
        await self._protector.set_levels(position, new_stop, new_target)

    async def _flip(
        self, position: OpenPosition, decision: Decision, price: Decimal, context: SignalContext
    ) -> None:
        """Close, then open the other side: one logical operation recorded even when the second leg fails."""
        new_side = opposite(position.side)
        refusal = _check_levels(new_side, price, decision.stop_loss, decision.take_profit)
        if refusal is not None:
            await self._refuse(position.signal_id, refusal, close_new=False)
            return
        closed = await self._protector.close_position(
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
        if opened is None and self._positions.for_signal(context.signal_id) is None:
            await self._close_signal(
                context.signal_id, "flip_position: closed; the opposite leg was not opened"
            )

    # Signals ----------------------------------------------------------------------------------------
    async def _refuse(self, signal_id: uuid.UUID, refusal: Refusal, *, close_new: bool = True) -> None:
        """Record why a decision was not carried out; a `new` signal is closed with that reason."""
        logger.info("decision refused signal_id=%s %s", signal_id, refusal)
        status = None
        if close_new and await self._signals.status(signal_id) is SignalStatus.NEW:
            status = SignalStatus.CLOSED
        try:
            await self._signals.set_state(
                signal_id, status=status, close_reason=str(refusal), refusal=str(refusal)
            )
        except StaleState as error:
            logger.warning("could not record refusal signal_id=%s error=%s", signal_id, error)

    async def _close_signal(self, signal_id: uuid.UUID, reason: str) -> None:
        try:
            await self._signals.set_state(
                signal_id, status=SignalStatus.CLOSED, close_reason=reason[:MAX_REASON_CHARS]
            )
        except StaleState as error:
            logger.warning("signal not closed signal_id=%s error=%s", signal_id, error)

    async def _watch_signal(self, signal_id: uuid.UUID) -> None:
        try:
            await self._signals.set_state(signal_id, status=SignalStatus.WATCHING)
        except StaleState as error:
            logger.warning("signal not moved to watching signal_id=%s error=%s", signal_id, error)

    # Helpers ----------------------------------------------------------------------------------------
    def _overdraws(self, cost: Decimal, balance: Decimal) -> bool:
        # Paper cash must cover the order; a real account's balance is the exchange's to enforce.
        return self._flow.mode is TradingMode.PAPER and cost > balance

    def _trailing_spec(self, side: PositionSide, price: Decimal) -> TrailingSpec | None:
        mode = self._config.trailing_mode
        if mode is None:
            return None
        activation = None
        if self._config.trailing_activation_fraction > 0:
            with exact():
                move = self._config.trailing_activation_fraction
                activation = price * (ONE + move) if side is PositionSide.LONG else price * (ONE - move)
        return TrailingSpec(mode, self._config.trailing_distance, activation)


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
