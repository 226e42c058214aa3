"""Positions, orders (the `trades` table) and the paper account: the transition RPCs, reads, and the mapping
between their rows and the trading values (OpenPosition, OrderIntent, OrderReport).

Every write is one of the trading migration's transition functions (one transaction each, idempotent on ids
the worker generated), so a retry after a timeout is always safe. Numbers travel as plain decimal strings.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Protocol

from worker.db.batching import BatchedRpc, Urgency
from worker.db.client import Database
from worker.domain import ledger
from worker.domain.enums import (
    OrderSide,
    OrderStatus,
    OrderType,
    PositionSide,
    PositionStatus,
    SignalStatus,
    TradingMode,
)
from worker.domain.money import exact, plain
from worker.domain.orders import ClientOrderId, ExchangeOrderId, OrderReport
from worker.domain.positions import (
    CloseReason,
    IntentKind,
    OpenPosition,
    OrderIntent,
    Protection,
    TrailingMode,
    TrailingSpec,
    TrailingState,
)

# Fee assets whose fee is already in the quote currency (the paper venue books fees in USDT).
_QUOTE_FEE_ASSETS: Final = (None, "USDT", "QUOTE")
# What a recorded position keeps of its metadata when read back.
_KEPT_METADATA: Final = ("analysis_id", "flipped")


@dataclass(frozen=True, slots=True)
class RecordedOrder:
    """An order as `trading_record_order` returns it (the earlier row when the id was recorded already)."""

    status: OrderStatus
    error_message: str | None


@dataclass(frozen=True, slots=True)
class FillResult:
    applied: bool  # False: this order's fill was already recorded (a retry)
    recorded: OpenPosition | None  # a replay: the position as the database already holds it


@dataclass(frozen=True, slots=True)
class PendingOrder:
    """An order recorded but not finished (a crash between recording it and applying its fill)."""

    client_order_id: ClientOrderId
    symbol: str
    signal_id: uuid.UUID | None
    intent: OrderIntent | None


@dataclass(frozen=True, slots=True)
class ClosedPosition:
    trader_id: uuid.UUID
    symbol: str
    closed_at: datetime


@dataclass(frozen=True, slots=True)
class RealizedPnl:
    """One fill's realised PnL after its fee, in the quote currency."""

    trader_id: uuid.UUID
    net: Decimal


class TradingStore(Protocol):
    """What trading needs of positions, orders and the paper account (TradingRows; a backtest's memory
    store). The writes keep the transition functions' rules: idempotent per client order id, a fill
    applied once, a position's size checked against the one expected."""

    async def paper_balance(self) -> Decimal: ...

    async def record_order(
        self,
        cid: ClientOrderId,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        mode: TradingMode,
        *,
        signal_id: uuid.UUID,
        position_id: uuid.UUID | None,
        order_type: OrderType,
        price: Decimal,
        intent: OrderIntent,
    ) -> RecordedOrder: ...

    async def mark_order(
        self,
        cid: ClientOrderId,
        status: OrderStatus,
        *,
        exchange_order_id: ExchangeOrderId | None = None,
        error_message: str | None = None,
    ) -> None: ...

    async def apply_fill(
        self,
        report: OrderReport,
        position: OpenPosition,
        *,
        expected_size: Decimal,
        realized: Decimal | None = None,
        paper_delta: Decimal | None = None,
        close_reason: CloseReason | None = None,
        signal_status: SignalStatus | None = None,
        signal_close_reason: str | None = None,
    ) -> FillResult: ...

    async def store_levels(self, position: OpenPosition) -> None: ...

    async def store_trailing(self, position_id: uuid.UUID, state: TrailingState) -> None: ...

    async def store_protection(self, position_id: uuid.UUID, protection: Protection) -> None: ...

    async def open_positions(self) -> list[OpenPosition]: ...

    async def count_open_positions(self) -> int: ...

    async def pending_orders(self) -> list[PendingOrder]: ...

    async def order_status(self, cid: ClientOrderId) -> OrderStatus | None: ...

    async def closed_since(self, since: datetime) -> list[ClosedPosition]: ...

    async def realized_since(self, since: datetime) -> list[RealizedPnl]: ...


class TradingRows:
    """This user's trading state: every write a transition RPC, every read mapped to trading values.

    Orders, fills and position updates made at the same moment go to Postgres together (batching.py): the
    closes one price triggers record their orders in one round trip.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        urgency = Urgency()
        # A close's order goes before every other write; an entry's order is not urgent.
        self._record_exits = BatchedRpc(
            db, "trading_record_order", "trading_record_orders", urgency=urgency, urgent=True
        )
        self._record_orders = BatchedRpc(db, "trading_record_order", "trading_record_orders", urgency=urgency)
        self._apply_fills = BatchedRpc(
            db, "trading_apply_fill", "trading_apply_fills", urgency=urgency, one_at_a_time=True
        )
        self._update_positions = BatchedRpc(
            db, "trading_update_position", "trading_update_positions", urgency=urgency, one_at_a_time=True
        )

    # Transitions --------------------------------------------------------------------------------------
    async def paper_balance(self) -> Decimal:
        return Decimal(str(await self._db.rpc("trading_paper_balance", {})))

    async def record_order(
        self,
        cid: ClientOrderId,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        mode: TradingMode,
        *,
        signal_id: uuid.UUID,
        position_id: uuid.UUID | None,
        order_type: OrderType,
        price: Decimal,
        intent: OrderIntent,
    ) -> RecordedOrder:
        """Record an order before sending it (status pending) with the price it allows (a limit, or a MARKET
        order's reference price); an id this user recorded before returns that row."""
        trade = {
            "client_order_id": cid,
            "signal_id": str(signal_id),
            "position_id": str(position_id) if position_id else None,
            "type": mode.value,
            "side": side.value,
            "order_type": order_type.value,
            "symbol": symbol,
            "price": plain(price),
            "quantity": plain(quantity),
            "intent": _intent_json(intent),
        }
        record = self._record_exits if intent.kind is IntentKind.CLOSE else self._record_orders
        row = await record.call({"trade": trade})
        return RecordedOrder(OrderStatus(row["status"]), row.get("error_message"))

    async def mark_order(
        self,
        cid: ClientOrderId,
        status: OrderStatus,
        *,
        exchange_order_id: ExchangeOrderId | None = None,
        error_message: str | None = None,
    ) -> None:
        body = {
            "client_order_id": cid,
            "status": status.value,
            "binance_order_id": exchange_order_id,
            "error_message": error_message,
        }
        await self._db.rpc("trading_mark_order", body)

    async def apply_fill(
        self,
        report: OrderReport,
        position: OpenPosition,
        *,
        expected_size: Decimal,
        realized: Decimal | None = None,
        paper_delta: Decimal | None = None,
        close_reason: CloseReason | None = None,
        signal_status: SignalStatus | None = None,
        signal_close_reason: str | None = None,
    ) -> FillResult:
        """Record `report`'s fill and `position` as it stands after it, exactly once (`expected_size`: the
        size recorded before this fill; a different one means the position moved: StaleState)."""
        fill = report.fill
        assert fill is not None
        body = {
            "client_order_id": report.client_order_id,
            "price": plain(fill.price),
            "quantity": plain(fill.quantity),
            "fee": plain(fill.fee),
            "fee_asset": fill.fee_asset,
            "binance_order_id": report.exchange_order_id if position.mode is TradingMode.REAL else None,
            "realized_pnl": _text(realized),
            "expected_size": plain(expected_size),
            "position": position_json(position, close_reason=close_reason, exit_price=fill.price),
            "signal_status": signal_status.value if signal_status else None,
            "signal_close_reason": signal_close_reason,
            "paper_balance_delta": _text(paper_delta),
        }
        result = await self._apply_fills.call({"fill": body})
        applied = bool(result["applied"])
        row = result.get("position")
        recorded = position_from_row(row, position.trader_id) if not applied and row is not None else None
        return FillResult(applied, recorded)

    async def store_levels(self, position: OpenPosition) -> None:
        """The position's stop-loss and take-profit (and the protection guarding them)."""
        changes = {
            "stop_loss": _text(position.stop_loss),
            "take_profit": _text(position.take_profit),
            "metadata": {"protection": _protection_json(position.protection)},
        }
        await self._update_position(position.id, changes)

    async def store_trailing(self, position_id: uuid.UUID, state: TrailingState) -> None:
        changes = {
            "trailing_stop_reference_price": _text(state.reference_price),
            "metadata": {"trailing_stop_price": _text(state.stop_price)},
        }
        await self._update_position(position_id, changes)

    async def store_protection(self, position_id: uuid.UUID, protection: Protection) -> None:
        changes = {
            "stop_loss_order_id": protection.stop_loss_order_id,
            "take_profit_order_id": protection.take_profit_order_id,
            "metadata": {"protection": _protection_json(protection)},
        }
        await self._update_position(position_id, changes)

    async def _update_position(self, position_id: uuid.UUID, changes: dict[str, Any]) -> None:
        await self._update_positions.call({"position_id": str(position_id), "changes": changes})

    # Reads ------------------------------------------------------------------------------------------
    async def open_positions(self) -> list[OpenPosition]:
        params = {"select": "*,signals!inner(trader_id)", "status": "eq.open", "order": "opened_at"}
        return [position_from_row(row) for row in await self._select("positions", params)]

    async def count_open_positions(self) -> int:
        filters = {"status": f"eq.{PositionStatus.OPEN.value}"}
        return await self._db.count("positions", filters, what="count open positions")

    async def pending_orders(self) -> list[PendingOrder]:
        params = {"select": "*", "status": "eq.pending", "order": "executed_at"}
        return [
            PendingOrder(
                ClientOrderId(str(row["client_order_id"])),
                str(row["symbol"]),
                uuid.UUID(str(row["signal_id"])) if row.get("signal_id") else None,
                _intent(row.get("intent")),
            )
            for row in await self._select("trades", params)
        ]

    async def order_status(self, cid: ClientOrderId) -> OrderStatus | None:
        rows = await self._select("trades", {"select": "status", "client_order_id": f"eq.{cid}"})
        return OrderStatus(rows[0]["status"]) if rows else None

    async def closed_since(self, since: datetime) -> list[ClosedPosition]:
        params = {
            "select": "id,symbol,closed_at,signals!inner(trader_id)",
            "status": "eq.closed",
            "closed_at": f"gte.{since.isoformat()}",
        }
        return [
            ClosedPosition(_trader_of(row), str(row["symbol"]), datetime.fromisoformat(str(row["closed_at"])))
            for row in await self._select("positions", params)
        ]

    async def realized_since(self, since: datetime) -> list[RealizedPnl]:
        """Fills that realised PnL since `since`, net of their fee (the daily loss limit's input)."""
        params = {
            "select": "realized_pnl,fee,fee_asset,price,signals!inner(trader_id)",
            "status": "eq.filled",
            "realized_pnl": "not.is.null",
            "executed_at": f"gte.{since.isoformat()}",
        }
        realized = []
        for row in await self._select("trades", params):
            fee = Decimal(str(row.get("fee") or 0))
            if row.get("fee_asset") not in _QUOTE_FEE_ASSETS:
                fee = fee * Decimal(str(row.get("price") or 0))
            realized.append(RealizedPnl(_trader_of(row), Decimal(str(row["realized_pnl"])) - fee))
        return realized

    async def _select(self, table: str, params: dict[str, str]) -> list[dict[str, Any]]:
        return await self._db.select(table, params, what=f"read {table}")


# Rows <-> values ------------------------------------------------------------------------------------
def _text(value: Decimal | None) -> str | None:
    return None if value is None else plain(value)


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _trader_of(row: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(str((row.get("signals") or {}).get("trader_id")))


def _trailing_json(spec: TrailingSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    return {
        "mode": spec.mode.value,
        "distance": plain(spec.distance),
        "activation_price": _text(spec.activation_price),
    }


def _trailing(value: Any) -> TrailingSpec | None:
    if not isinstance(value, dict):
        return None
    activation = value.get("activation_price")
    return TrailingSpec(
        TrailingMode(value["mode"]),
        Decimal(str(value["distance"])),
        Decimal(str(activation)) if activation else None,
    )


def _protection_json(protection: Protection) -> dict[str, Any]:
    return {
        "stop_loss_id": protection.stop_loss_id,
        "take_profit_id": protection.take_profit_id,
        "stop_loss_order_id": protection.stop_loss_order_id,
        "take_profit_order_id": protection.take_profit_order_id,
        "generation": protection.generation,
    }


def _intent_json(intent: OrderIntent) -> dict[str, Any]:
    position_id = str(intent.position_id) if intent.position_id else None
    if intent.kind is IntentKind.OPEN:
        return {
            "kind": intent.kind.value,
            "position_id": position_id,
            "trader_id": str(intent.trader_id),
            "side": intent.side.value if intent.side else None,
            "stop_loss": _text(intent.stop_loss),
            "take_profit": _text(intent.take_profit),
            "analysis_id": str(intent.analysis_id) if intent.analysis_id else None,
            "flip": intent.flip,
            "trailing": _trailing_json(intent.trailing),
        }
    if intent.kind is IntentKind.CLOSE:
        reason = intent.reason.value if intent.reason else None
        return {"kind": intent.kind.value, "position_id": position_id, "reason": reason}
    if intent.kind is IntentKind.PROTECTION:
        leg = "sl" if intent.stop_leg else "tp"
        return {"kind": intent.kind.value, "leg": leg, "position_id": position_id}
    return {"kind": intent.kind.value, "position_id": position_id}


def _intent(value: Any) -> OrderIntent | None:
    if not isinstance(value, dict) or value.get("kind") not in set(IntentKind):
        return None
    uid = _uuid_or_none
    kind = IntentKind(value["kind"])
    side = value.get("side")
    return OrderIntent(
        kind=kind,
        position_id=uid(value.get("position_id")),
        trader_id=uid(value.get("trader_id")),
        side=PositionSide(side) if side else None,
        stop_loss=_decimal(value.get("stop_loss") or None),
        take_profit=_decimal(value.get("take_profit") or None),
        analysis_id=uid(value.get("analysis_id")),
        flip=bool(value.get("flip")),
        trailing=_trailing(value.get("trailing")),
        reason=CloseReason(value.get("reason") or CloseReason.DECISION) if kind is IntentKind.CLOSE else None,
        stop_leg=value.get("leg") == "sl",
    )


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    return uuid.UUID(str(value)) if value else None


def position_json(
    position: OpenPosition, *, close_reason: CloseReason | None = None, exit_price: Decimal | None = None
) -> dict[str, Any]:
    """The positions row (and metadata) for `position`'s current book."""
    book = position.book
    closed = not book.is_open
    trailing = position.trailing
    return {
        "id": str(position.id),
        "signal_id": str(position.signal_id),
        "symbol": position.symbol,
        "side": book.side.value,
        "type": position.mode.value,
        "entry_price": plain(book.entry_price),
        "size": plain(book.size),
        "stop_loss": _text(position.stop_loss),
        "take_profit": _text(position.take_profit),
        "trailing_stop_percent": (
            _text(trailing.distance)
            if trailing is not None and trailing.mode is TrailingMode.PERCENT
            else None
        ),
        "trailing_stop_activation_price": _text(trailing.activation_price) if trailing is not None else None,
        "trailing_stop_reference_price": _text(position.trailing_state.reference_price),
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
    protection_json = metadata.get("protection") or {}
    protection = Protection(
        protection_json.get("stop_loss_id"),
        protection_json.get("take_profit_id"),
        protection_json.get("stop_loss_order_id"),
        protection_json.get("take_profit_order_id"),
        int(protection_json.get("generation", 0)),
    )
    owner = trader_id or uuid.UUID(str(metadata.get("trader_id") or _trader_of(row)))
    return OpenPosition(
        id=uuid.UUID(str(row["id"])),
        signal_id=uuid.UUID(str(row["signal_id"])),
        trader_id=owner,
        symbol=str(row["symbol"]),
        mode=TradingMode(row.get("type", "paper")),
        book=book,
        stop_loss=_decimal(row.get("stop_loss")),
        take_profit=_decimal(row.get("take_profit")),
        trailing=_trailing(metadata.get("trailing")),
        trailing_state=TrailingState(
            _decimal(row.get("trailing_stop_reference_price")), _decimal(metadata.get("trailing_stop_price"))
        ),
        protection=protection,
        metadata={key: value for key, value in metadata.items() if key in _KEPT_METADATA},
    )
