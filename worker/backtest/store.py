"""A backtest's database: the `signals`, positions, orders and paper account in memory, behind the same
gateway protocols the engine and trading write through live (`SignalStore`, `TradingStore`).

Each write keeps the rule of the transition function it stands for (supabase/migrations/
20261120234000_add_trading_transitions.sql): an order recorded once per client order id, a fill applied
once, a position's size checked against the one expected, a signal moved only along its lifecycle, a paper
fill never overdrawing. So a backtest exercises the same order flow as a live run, and never touches the
user's own rows. Rows are stamped with market time (the backtest's clock).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Final

from worker.clock import Clock
from worker.db.client import InsufficientPaperBalance, StaleState
from worker.db.signals import MAX_CLOSE_REASON_CHARS, InsertOutcome
from worker.db.trading import ClosedPosition, FillResult, PendingOrder, RealizedPnl, RecordedOrder
from worker.domain import ledger
from worker.domain.enums import OrderSide, OrderStatus, OrderType, SignalStatus, TradingMode
from worker.domain.money import ZERO, exact
from worker.domain.orders import ClientOrderId, ExchangeOrderId, OrderReport
from worker.domain.positions import CloseReason, OpenPosition, OrderIntent, Protection, TrailingState
from worker.domain.signal import Signal
from worker.errors import InvariantViolation

MAX_REFUSAL_CHARS: Final = 500


@dataclass(slots=True)
class SignalRecord:
    id: uuid.UUID
    trader_id: uuid.UUID
    symbol: str
    trigger_price: Decimal
    created_at: datetime
    status: SignalStatus = SignalStatus.NEW
    closed_at: datetime | None = None
    close_reason: str | None = None
    last_refusal: str | None = None


@dataclass(slots=True)
class OrderRecord:
    client_order_id: ClientOrderId
    symbol: str
    side: OrderSide
    quantity: Decimal
    mode: TradingMode
    signal_id: uuid.UUID
    position_id: uuid.UUID | None
    order_type: OrderType
    intent: OrderIntent
    status: OrderStatus = OrderStatus.PENDING
    error_message: str | None = None
    price: Decimal | None = None
    fee: Decimal = ZERO
    realized_pnl: Decimal | None = None
    executed_at: datetime | None = None


@dataclass(slots=True)
class PositionRecord:
    position: OpenPosition  # as it now stands (its book closed once it is)
    opened_at: datetime
    entered: Decimal = ZERO  # every quantity that went into it (its size at the peak, scale-ins included)
    closed_at: datetime | None = None
    exit_price: Decimal | None = None
    close_reason: CloseReason | None = None

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class MemorySignals:
    """The `signals` table of one backtest (implements worker.db.signals.SignalStore)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.rows: dict[uuid.UUID, SignalRecord] = {}
        # Whether a signal holds an open position (a signal with one is closed only by its fill).
        self.holds_position: Callable[[uuid.UUID], bool] = lambda _signal_id: False

    async def insert(
        self, signal_id: uuid.UUID, trader_id: uuid.UUID, symbol: str, trigger_price: Decimal
    ) -> InsertOutcome:
        if signal_id in self.rows:
            return InsertOutcome.CREATED
        if any(
            row.trader_id == trader_id and row.symbol == symbol and row.status is not SignalStatus.CLOSED
            for row in self.rows.values()
        ):
            return InsertOutcome.ALREADY_LIVE  # signals_one_live_per_trader_symbol
        self.rows[signal_id] = SignalRecord(signal_id, trader_id, symbol, trigger_price, self._clock.now())
        return InsertOutcome.CREATED

    async def live_symbols(self, trader_id: uuid.UUID, symbols: Iterable[str]) -> set[str]:
        wanted = set(symbols)
        return {
            row.symbol
            for row in self.rows.values()
            if row.trader_id == trader_id and row.symbol in wanted and row.status is not SignalStatus.CLOSED
        }

    async def recent(self, trader_id: uuid.UUID, since: datetime) -> dict[str, datetime]:
        newest: dict[str, datetime] = {}
        for row in self.rows.values():
            if row.trader_id == trader_id and row.created_at >= since:
                newest[row.symbol] = max(newest.get(row.symbol, row.created_at), row.created_at)
        return newest

    async def new_before(self, cutoff: datetime) -> list[uuid.UUID]:
        # A replay never restarts and waits for every analysis: no signal is ever stranded in it.
        return []

    async def close_if_new(self, signal_id: uuid.UUID, reason: str) -> bool:
        row = self.rows.get(signal_id)
        if row is None or row.status is not SignalStatus.NEW:
            return False
        self._close(row, reason)
        return True

    async def status(self, signal_id: uuid.UUID) -> SignalStatus | None:
        row = self.rows.get(signal_id)
        return row.status if row is not None else None

    async def set_state(
        self,
        signal_id: uuid.UUID,
        *,
        status: SignalStatus | None = None,
        close_reason: str | None = None,
        refusal: str | None = None,
    ) -> None:
        row = self.rows.get(signal_id)
        if row is None:
            raise StaleState(f"no signal {signal_id}")
        if status is not None and status is not row.status:
            if row.status is SignalStatus.CLOSED:
                raise StaleState(f"signal {signal_id} is closed")
            if status is SignalStatus.NEW or (
                status is SignalStatus.WATCHING and row.status is not SignalStatus.NEW
            ):
                raise StaleState(f"signal {signal_id} cannot go from {row.status} to {status}")
            if status is SignalStatus.CLOSED and self.holds_position(signal_id):
                raise StaleState(f"signal {signal_id} has an open position")
            if status is SignalStatus.CLOSED:
                self._close(row, close_reason or "")
            else:
                row.status = status
        if refusal is not None:
            row.last_refusal = refusal[:MAX_REFUSAL_CHARS]

    async def watching(self, trader_id: uuid.UUID) -> list[Signal]:
        rows = sorted(
            (r for r in self.rows.values() if r.trader_id == trader_id and r.status is SignalStatus.WATCHING),
            key=lambda r: r.created_at,
        )
        return [Signal(r.id, r.trader_id, r.symbol, r.trigger_price, r.status) for r in rows]

    async def ids_with(self, status: SignalStatus) -> list[uuid.UUID]:
        return [row.id for row in self.rows.values() if row.status is status]

    async def count(self, status: SignalStatus) -> int:
        return sum(1 for row in self.rows.values() if row.status is status)

    def _close(self, row: SignalRecord, reason: str) -> None:
        row.status = SignalStatus.CLOSED
        row.closed_at = row.closed_at or self._clock.now()
        row.close_reason = reason[:MAX_CLOSE_REASON_CHARS]


class MemoryTrading:
    """Positions, orders and the paper account of one backtest (implements worker.db.trading.TradingStore)."""

    def __init__(self, clock: Clock, signals: MemorySignals, starting_balance_usd: Decimal) -> None:
        self._clock = clock
        self._signals = signals
        self.starting_balance_usd = starting_balance_usd
        self.balance_usd = starting_balance_usd
        self.orders: dict[ClientOrderId, OrderRecord] = {}
        self.positions: dict[uuid.UUID, PositionRecord] = {}
        self._open: dict[uuid.UUID, PositionRecord] = {}

    async def paper_balance(self) -> Decimal:
        return self.balance_usd

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
        order = self.orders.get(cid)
        if order is None:
            order = self.orders[cid] = OrderRecord(
                cid, symbol, side, quantity, mode, signal_id, position_id, order_type, intent, price=price
            )
        return RecordedOrder(order.status, order.error_message)

    async def mark_order(
        self,
        cid: ClientOrderId,
        status: OrderStatus,
        *,
        exchange_order_id: ExchangeOrderId | None = None,
        error_message: str | None = None,
    ) -> None:
        if status in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
            raise InvariantViolation("fills are recorded with apply_fill")
        order = self.orders.get(cid)
        if order is None:
            raise StaleState(f"no order {cid}")
        if order.status not in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
            order.status = status
            if status is OrderStatus.FAILED:
                order.error_message = (error_message or "failed")[:2000]

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
        fill = report.fill
        assert fill is not None
        order = self.orders.get(report.client_order_id)
        if order is None:
            raise StaleState(f"no order {report.client_order_id}")
        if order.status is OrderStatus.FILLED:
            recorded = self.positions.get(order.position_id or position.id)
            return FillResult(False, recorded.position if recorded is not None else None)
        existing = self._expected(position.id, expected_size)
        balance = self.balance_usd
        if paper_delta is not None:
            with exact():
                balance += paper_delta
            if balance < 0:
                raise InsufficientPaperBalance(f"paper balance would become negative (delta {paper_delta})")
        now = self._clock.now()
        closed = not position.book.is_open
        if existing is None:
            existing = self.positions[position.id] = PositionRecord(position, now)
        grown = position.book.size - (ZERO if existing.position is position else existing.position.book.size)
        if grown > 0:
            with exact():
                existing.entered += grown
        existing.position = position
        if closed:
            existing.closed_at, existing.exit_price, existing.close_reason = now, fill.price, close_reason
            self._open.pop(position.id, None)
        else:
            self._open[position.id] = existing
        order.status, order.position_id, order.price = OrderStatus.FILLED, position.id, fill.price
        order.quantity, order.fee, order.realized_pnl = fill.quantity, fill.fee, realized
        order.executed_at, order.error_message = now, None
        if signal_status is not None:
            row = self._signals.rows[position.signal_id]
            if signal_status is SignalStatus.CLOSED:
                row.status, row.closed_at = SignalStatus.CLOSED, row.closed_at or now
                row.close_reason = (signal_close_reason or "")[:MAX_CLOSE_REASON_CHARS]
            else:
                row.status = signal_status
        self.balance_usd = balance
        return FillResult(True, None)

    def _expected(self, position_id: uuid.UUID, expected_size: Decimal) -> PositionRecord | None:
        """The position a fill applies to, if it is as the fill expects it (else StaleState)."""
        existing = self.positions.get(position_id)
        if existing is None:
            if expected_size != 0:
                raise StaleState(f"position {position_id} does not exist")
            return None
        if not existing.is_open:
            raise StaleState(f"position {position_id} is closed")
        if existing.position.book.size != expected_size:
            size = existing.position.book.size
            raise StaleState(f"position {position_id} has size {size}, not the expected {expected_size}")
        return existing

    async def store_levels(self, position: OpenPosition) -> None:
        record = self._held(position.id)
        record.position = replace(
            record.position, stop_loss=position.stop_loss, take_profit=position.take_profit,
            protection=position.protection,
        )  # fmt: skip

    async def store_trailing(self, position_id: uuid.UUID, state: TrailingState) -> None:
        record = self._held(position_id)
        record.position = replace(record.position, trailing_state=state)

    async def store_protection(self, position_id: uuid.UUID, protection: Protection) -> None:
        record = self._held(position_id)
        record.position = replace(record.position, protection=protection)

    async def open_positions(self) -> list[OpenPosition]:
        return [record.position for record in self._open.values()]

    async def count_open_positions(self) -> int:
        return len(self._open)

    async def pending_orders(self) -> list[PendingOrder]:
        return [
            PendingOrder(order.client_order_id, order.symbol, order.signal_id, order.intent)
            for order in self.orders.values()
            if order.status is OrderStatus.PENDING
        ]

    async def order_status(self, cid: ClientOrderId) -> OrderStatus | None:
        order = self.orders.get(cid)
        return order.status if order is not None else None

    async def closed_since(self, since: datetime) -> list[ClosedPosition]:
        return [
            ClosedPosition(r.position.trader_id, r.position.symbol, r.closed_at)
            for r in self.positions.values()
            if r.closed_at is not None and r.closed_at >= since
        ]

    async def realized_since(self, since: datetime) -> list[RealizedPnl]:
        realized = []
        for order in self.orders.values():
            record = self.positions.get(order.position_id) if order.position_id else None
            if order.realized_pnl is None or order.executed_at is None or record is None:
                continue
            if order.executed_at >= since:
                with exact():
                    net = order.realized_pnl - order.fee
                realized.append(RealizedPnl(record.position.trader_id, net))
        return realized

    def _held(self, position_id: uuid.UUID) -> PositionRecord:
        record = self._open.get(position_id)
        if record is None:
            raise StaleState(f"no open position {position_id}")
        return record

    def open_position_of(self, signal_id: uuid.UUID) -> OpenPosition | None:
        """The open position a signal holds (the analyst's context)."""
        record = self.open_record_of(signal_id)
        return record.position if record is not None else None

    def open_record_of(self, signal_id: uuid.UUID) -> PositionRecord | None:
        return next((r for r in self._open.values() if r.position.signal_id == signal_id), None)

    def equity_usd(self, marks: dict[str, Decimal]) -> Decimal:
        """Cash plus the open positions marked at `marks` (their cost is held out of cash while open)."""
        with exact():
            total = self.balance_usd
            for record in self._open.values():
                book = record.position.book
                mark = marks.get(record.position.symbol, book.entry_price)
                total += book.cost_basis + ledger.unrealized_pnl(book, mark)
            return total


@dataclass
class MemoryTables:
    """The table families a backtest's trading writes (satisfies worker.db.TradingTables)."""

    clock: Clock
    starting_balance_usd: Decimal
    signals: MemorySignals = field(init=False)
    trading: MemoryTrading = field(init=False)

    def __post_init__(self) -> None:
        self.signals = MemorySignals(self.clock)
        self.trading = MemoryTrading(self.clock, self.signals, self.starting_balance_usd)
        self.signals.holds_position = lambda signal_id: self.trading.open_position_of(signal_id) is not None
