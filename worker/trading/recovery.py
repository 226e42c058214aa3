"""Recovery at start: load open positions, finish or fail orders left pending by a crash, reconcile with
the venue (real mode: by client order id), seed the guardrails, re-arm the monitor, and report."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from worker.domain.enums import OrderStatus, PositionSide, SignalStatus, TradingMode
from worker.errors import WorkerError
from worker.trading.executor import TradeExecutor, position_from_row
from worker.trading.model import (
    ClientOrderId,
    CloseReason,
    OpenPosition,
    OrderReport,
    OrderState,
    Protection,
    TrailingMode,
    TrailingSpec,
)

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


async def recover(executor: TradeExecutor) -> RecoveryReport:
    """Bring the executor's memory and the venue in line with the database (idempotent)."""
    store = executor.store
    executor.positions.clear()
    for row in await store.open_positions():
        position = position_from_row(row)
        executor.positions[position.id] = position
        if executor.watcher is not None:
            executor.watcher.track(position)
    completed = failed = 0
    for trade in await store.pending_trades():
        done = await _resolve_pending(executor, trade)
        completed += done is True
        failed += done is False
    await _seed_guardrails(executor)
    await _close_orphaned_signals(executor)
    exits = placed = 0
    if executor.venue.supports_protection:
        exits = await executor.reconcile_exchange_exits()
        for position in list(executor.positions.values()):
            unguarded = not position.protection.client_ids
            if unguarded and (position.stop_loss is not None or position.take_profit is not None):
                await executor._protect(position, generation=position.protection.generation + 1)
                placed += 1
    watching = len(await store.watching_signals())
    report = RecoveryReport(
        executor.mode, len(executor.positions), watching, completed, failed, exits, placed
    )
    logger.info(
        "trading recovered mode=%s open_positions=%d watching_signals=%d pending_completed=%d"
        " pending_failed=%d exchange_exits=%d protection_placed=%d",
        report.mode, report.open_positions, report.watching_signals, report.pending_completed,
        report.pending_failed, report.exchange_exits, report.protection_placed,
    )  # fmt: skip
    return report


async def _resolve_pending(executor: TradeExecutor, trade: dict[str, Any]) -> bool | None:
    """Finish one order a crash left pending: True if recorded as executed, False if failed, None if it is
    a resting protective order that stays."""
    store, venue = executor.store, executor.venue
    cid = ClientOrderId(str(trade["client_order_id"]))
    symbol = str(trade["symbol"])
    intent = trade.get("intent") or {}
    kind = intent.get("kind")
    report = await venue.lookup(symbol, cid)
    position_id = uuid.UUID(intent["position_id"]) if intent.get("position_id") else None
    position = executor.positions.get(position_id) if position_id else None
    if kind == "protection":
        stop_leg = intent.get("leg") == "sl"
        return await _resolve_protection(executor, cid, symbol, report, position, stop_leg=stop_leg)
    if report is None or report.fill is None or report.fill.quantity <= 0:
        message = "not executed: the worker stopped before the order was filled"
        await store.mark_order(cid, OrderStatus.FAILED, error_message=message)
        if kind == "open" and trade.get("signal_id"):
            signal = await store.signal(uuid.UUID(str(trade["signal_id"])))
            status = (
                SignalStatus.CLOSED
                if signal is not None and signal.get("status") == SignalStatus.NEW
                else None
            )
            try:
                await store.set_signal(
                    uuid.UUID(str(trade["signal_id"])), status=status, close_reason=message, refusal=message
                )
            except WorkerError as error:
                logger.warning("could not record on signal client_order_id=%s error=%s", cid, error)
        logger.info("pending order failed client_order_id=%s kind=%s", cid, kind)
        return False
    logger.info("pending order found executed client_order_id=%s kind=%s", cid, kind)
    if kind == "open":
        side = PositionSide(intent["side"])
        trailing_json = intent.get("trailing")
        trailing = (
            TrailingSpec(
                TrailingMode(trailing_json["mode"]),
                Decimal(trailing_json["distance"]),
                Decimal(trailing_json["activation_price"]) if trailing_json.get("activation_price") else None,
            )
            if isinstance(trailing_json, dict)
            else None
        )
        await executor.apply_entry_fill(
            report,
            position_id=uuid.UUID(intent["position_id"]),
            signal_id=uuid.UUID(str(trade["signal_id"])),
            trader_id=uuid.UUID(intent["trader_id"]),
            symbol=symbol,
            side=side,
            stop_loss=Decimal(intent["stop_loss"]) if intent.get("stop_loss") else None,
            take_profit=Decimal(intent["take_profit"]) if intent.get("take_profit") else None,
            trailing=trailing,
            metadata={"analysis_id": intent.get("analysis_id"), "recovered": True},
        )
        return True
    if position is None:
        await store.mark_order(
            cid, OrderStatus.FAILED, error_message="executed for a position that is not open"
        )
        return False
    if kind == "close":
        reason = CloseReason(intent.get("reason", CloseReason.DECISION.value))
        await executor.apply_close_fill(report, position, reason)
    else:
        updated = await executor.apply_change_fill(report, position, increase=kind == "increase")
        if executor.venue.supports_protection:
            executor.positions[updated.id] = replace(
                updated, protection=Protection(generation=updated.protection.generation)
            )
    return True


async def _resolve_protection(
    executor: TradeExecutor,
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
        report = await executor.venue.cancel(symbol, cid)
    if report is not None and report.state is OrderState.FILLED and report.fill and position is not None:
        stop = cid == position.protection.stop_loss_id or stop_leg
        await executor.apply_close_fill(
            report, position, CloseReason.STOP_LOSS if stop else CloseReason.TAKE_PROFIT
        )
        return True
    if report is not None and report.is_open:
        return None
    status = OrderStatus.CANCELLED if report is not None else OrderStatus.FAILED
    message = "not placed: the worker stopped before the exchange accepted it"
    await executor.store.mark_order(cid, status, error_message=message)
    return False


async def _close_orphaned_signals(executor: TradeExecutor) -> None:
    # A crash between a flip's two legs leaves the signal position_open with no open position: the flip
    # is recorded (the closed position says `flip`), so close the signal and say why.
    held = {position.signal_id for position in executor.positions.values()}
    for row in await executor.store.signals_in(SignalStatus.POSITION_OPEN):
        signal_id = uuid.UUID(str(row["id"]))
        if signal_id in held:
            continue
        reason = "no open position after restart (interrupted flip or close)"
        try:
            await executor.store.set_signal(signal_id, status=SignalStatus.CLOSED, close_reason=reason)
        except WorkerError as error:
            logger.warning("could not close signal signal_id=%s error=%s", signal_id, error)


async def _seed_guardrails(executor: TradeExecutor) -> None:
    now = executor.clock.now()
    cooldown_start = now - timedelta(seconds=executor.config.symbol_cooldown_secs)
    for row in await executor.store.closed_positions_since(cooldown_start):
        trader_id = uuid.UUID(str((row.get("signals") or {}).get("trader_id")))
        executor.guardrails.record_close(
            trader_id, str(row["symbol"]), datetime.fromisoformat(str(row["closed_at"]))
        )
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for row in await executor.store.realized_since(day_start):
        trader_id = uuid.UUID(str((row.get("signals") or {}).get("trader_id")))
        fee = Decimal(str(row.get("fee") or 0))
        if row.get("fee_asset") not in (None, "USDT", "QUOTE"):
            fee = fee * Decimal(str(row.get("price") or 0))
        executor.guardrails.record_realized(trader_id, Decimal(str(row["realized_pnl"])) - fee, now)
