"""The open positions the worker holds: one registry shared by the executor, protection, recovery and the
HTTP API, that keeps the position monitor watching exactly these, and a lock per trader so a decision and
an exit never act on one trader's positions at the same time (the monitor's exits of distinct positions
may run side by side)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, Protocol

from aiorwlock import RWLock

from worker.domain import ledger
from worker.domain.money import plain
from worker.domain.positions import OpenPosition, TrailingState


class PositionWatcher(Protocol):
    """What the registry tells the position monitor."""

    def track(self, position: OpenPosition) -> None: ...

    def untrack(self, position_id: uuid.UUID) -> None: ...


class TraderLock(Protocol):
    """`async with` it (aiorwlock's reader and writer locks)."""

    async def __aenter__(self) -> None: ...

    async def __aexit__(self, *args: Any) -> None: ...


class OpenPositions:
    """Open positions by id; `watch` also (re)arms the monitor, `forget` disarms it."""

    def __init__(self, watcher: PositionWatcher) -> None:
        self._watcher = watcher
        self._positions: dict[uuid.UUID, OpenPosition] = {}
        # Writer-preferring: a decision waiting for the lock goes before exits asked for after it.
        self._locks: dict[uuid.UUID, RWLock] = defaultdict(lambda: RWLock(fast=True))

    def __len__(self) -> int:
        return len(self._positions)

    def __contains__(self, position_id: uuid.UUID) -> bool:
        return position_id in self._positions

    def get(self, position_id: uuid.UUID) -> OpenPosition | None:
        return self._positions.get(position_id)

    def all(self) -> list[OpenPosition]:
        return list(self._positions.values())

    def for_signal(self, signal_id: uuid.UUID) -> OpenPosition | None:
        return next((p for p in self._positions.values() if p.signal_id == signal_id), None)

    def of_trader(self, trader_id: uuid.UUID) -> list[OpenPosition]:
        return [p for p in self._positions.values() if p.trader_id == trader_id]

    def put(self, position: OpenPosition) -> None:
        """Remember `position` as it now stands (what the monitor watches does not change)."""
        self._positions[position.id] = position

    def watch(self, position: OpenPosition) -> None:
        """Remember `position` and have the monitor watch it with these levels."""
        self._positions[position.id] = position
        self._watcher.track(position)

    def forget(self, position_id: uuid.UUID) -> None:
        """The position is closed: drop it and stop watching it."""
        self._positions.pop(position_id, None)
        self._watcher.untrack(position_id)

    def reset(self, positions: Iterable[OpenPosition]) -> None:
        """Hold exactly `positions` (what the database says is open), all watched."""
        for position_id in list(self._positions):
            self.forget(position_id)
        for position in positions:
            self.watch(position)

    def lock(self, trader_id: uuid.UUID) -> TraderLock:
        """Alone with one trader's positions (a decision, an entry and its guardrails, a reconcile, moving
        levels): after every exit under way, before any exit asked for later."""
        return self._locks[trader_id].writer_lock

    def exit_lock(self, trader_id: uuid.UUID) -> TraderLock:
        """Beside the trader's other exits only: the monitor's closes, each of its own position (it never
        starts two for one position), so one stop hit never waits for another position's close."""
        return self._locks[trader_id].reader_lock

    def view(
        self,
        last_price: Callable[[str], Decimal | None],
        trailing_state: Callable[[uuid.UUID], TrailingState | None],
    ) -> list[dict[str, str | None]]:
        """Every open position with its live price, trailing stop and PnL (GET /positions)."""
        return [_view(p, last_price(p.symbol), trailing_state(p.id)) for p in self._positions.values()]


def _view(
    position: OpenPosition, price: Decimal | None, trailing: TrailingState | None
) -> dict[str, str | None]:
    book = position.book
    return {
        "id": str(position.id),
        "signal_id": str(position.signal_id),
        "trader_id": str(position.trader_id),
        "symbol": position.symbol,
        "side": position.side.value,
        "mode": position.mode.value,
        "size": plain(book.size),
        "entry_price": plain(book.entry_price),
        "stop_loss": _text(position.stop_loss),
        "take_profit": _text(position.take_profit),
        "trailing_stop": _text(trailing.stop_price if trailing else None),
        "last_price": _text(price),
        "unrealized_pnl": _text(ledger.unrealized_pnl(book, price) if price else None),
        "pnl_percent": _text(ledger.pnl_percent(book, price) if price else None),
    }


def _text(value: Decimal | None) -> str | None:
    return None if value is None else plain(value)
