"""The position monitor: stop-loss, take-profit and trailing stops evaluated on every ticker update.

`on_price` runs synchronously from the ticker store's listener for that symbol (cheap, never raises); a
triggered exit is queued for the position guard (guard.py) to close, and the position is not evaluated
again unless that close fails. `sweep` re-evaluates every symbol with its latest fresh price (new
positions, moved levels) and flags symbols whose price is stale. Trailing stops ratchet here; the guard
persists them, throttled.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from worker.clock import Clock
from worker.domain.enums import PositionSide
from worker.domain.positions import CloseReason, OpenPosition, TrailingMode, TrailingSpec, TrailingState
from worker.market.messages import Ticker
from worker.market.tickers import TickerStore
from worker.trading import trailing
from worker.trading.config import TradingConfig

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Watch:
    """The monitor's mutable view of one position."""

    id: uuid.UUID
    symbol: str
    side: PositionSide
    stop_loss: Decimal | None
    take_profit: Decimal | None
    trailing: TrailingSpec | None
    trailing_state: TrailingState
    closing: bool = False
    persisted: TrailingState = field(default_factory=TrailingState)
    persisted_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ExitRequest:
    position_id: uuid.UUID
    reason: CloseReason
    price: Decimal
    detected_monotonic: float


class PositionMonitor:
    """Watches every open position (one per worker); exits wait in `next_exit` for the guard."""

    def __init__(
        self,
        config: TradingConfig,
        *,
        clock: Clock,
        atr: Callable[[str], Decimal | None] | None = None,
        tickers: TickerStore | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._atr = atr
        self._watches: dict[uuid.UUID, _Watch] = {}
        self._by_symbol: dict[str, dict[uuid.UUID, _Watch]] = {}
        self._prices: dict[str, tuple[Decimal, float]] = {}
        self._exits: asyncio.Queue[ExitRequest] = asyncio.Queue()
        self.stale: set[str] = set()  # symbols whose positions the last sweep could not evaluate
        self.closes_started = 0
        self.close_failures = 0
        if tickers is not None:
            tickers.add_listener(self.on_ticker)

    # Positions --------------------------------------------------------------------------------------
    def track(self, position: OpenPosition) -> None:
        """Watch `position` (or refresh its levels); the current price is checked at the next update."""
        watch = self._watches.get(position.id)
        if watch is None:
            watch = _Watch(
                position.id, position.symbol, position.side, position.stop_loss, position.take_profit,
                position.trailing, position.trailing_state, persisted=position.trailing_state,
            )  # fmt: skip
            self._watches[position.id] = watch
            self._by_symbol.setdefault(position.symbol, {})[position.id] = watch
            return
        watch.stop_loss, watch.take_profit, watch.trailing = (
            position.stop_loss,
            position.take_profit,
            position.trailing,
        )
        watch.side = position.side
        if position.trailing_state.stop_price is not None and position.trailing_state != watch.trailing_state:
            watch.trailing_state = _tighter(watch.side, watch.trailing_state, position.trailing_state)

    def untrack(self, position_id: uuid.UUID) -> None:
        watch = self._watches.pop(position_id, None)
        if watch is not None:
            symbol_watches = self._by_symbol.get(watch.symbol)
            if symbol_watches is not None:
                symbol_watches.pop(position_id, None)
                if not symbol_watches:
                    del self._by_symbol[watch.symbol]

    def symbols(self) -> set[str]:
        return set(self._by_symbol)

    def watched(self) -> int:
        return len(self._watches)

    def trailing_state(self, position_id: uuid.UUID) -> TrailingState | None:
        watch = self._watches.get(position_id)
        return watch.trailing_state if watch is not None else None

    # Prices -----------------------------------------------------------------------------------------
    def on_ticker(self, ticker: Ticker) -> None:
        """The feed's ticker listener: evaluate that symbol's positions at once."""
        self.on_price(ticker.symbol, ticker.last_price)

    def on_price(self, symbol: str, price: Decimal) -> None:
        """Evaluate every position in `symbol` at `price` (synchronous; never raises)."""
        now = self._clock.monotonic()
        self._prices[symbol] = (price, now)
        watches = self._by_symbol.get(symbol)
        if not watches:
            return
        try:
            self._evaluate(watches.values(), price, now)
        except Exception:
            # A bug here must not break the feed that called us; the sweep will try again.
            logger.exception("position evaluation failed symbol=%s", symbol)

    def _evaluate(self, watches: Iterable[_Watch], price: Decimal, now: float) -> None:
        atr_cache: dict[str, Decimal | None] = {}
        for watch in list(watches):
            if watch.closing:
                continue
            spec = watch.trailing
            if spec is not None:
                atr = None
                if spec.mode is TrailingMode.ATR and self._atr is not None:
                    if watch.symbol not in atr_cache:
                        atr_cache[watch.symbol] = self._atr(watch.symbol)
                    atr = atr_cache[watch.symbol]
                watch.trailing_state = trailing.advance(watch.side, spec, watch.trailing_state, price, atr)
            reason = trailing.exit_reason(
                watch.side, price, watch.stop_loss, watch.take_profit, watch.trailing_state.stop_price
            )
            if reason is not None:
                watch.closing = True
                self._exits.put_nowait(ExitRequest(watch.id, reason, price, now))

    async def next_exit(self) -> ExitRequest:
        """The next triggered exit to close (the position stays out of evaluation while it closes)."""
        request = await self._exits.get()
        self.closes_started += 1
        return request

    def pending_exit(self) -> ExitRequest | None:
        """The next triggered exit if one waits, else None (a replay's guard takes them one by one)."""
        if self._exits.empty():
            return None
        self.closes_started += 1
        return self._exits.get_nowait()

    def levels(self, symbol: str) -> list[Decimal]:
        """Every price at which a position in `symbol` would exit now (stops, targets, trailing stops)."""
        found = []
        for watch in self._by_symbol.get(symbol, {}).values():
            if not watch.closing:
                levels = (watch.stop_loss, watch.take_profit, watch.trailing_state.stop_price)
                found += [level for level in levels if level is not None]
        return found

    def exit_failed(self, position_id: uuid.UUID) -> None:
        """The close did not happen: evaluate the position again from the next price on."""
        self.close_failures += 1
        watch = self._watches.get(position_id)
        if watch is not None:
            watch.closing = False

    # Safety net ------------------------------------------------------------------------------------
    def sweep(self) -> None:
        """Re-evaluate every watched symbol with its newest fresh price; flag stale ones."""
        now = self._clock.monotonic()
        stale = set()
        for symbol, watches in list(self._by_symbol.items()):
            latest = self._prices.get(symbol)
            if latest is None or now - latest[1] > self._config.stale_price_secs:
                stale.add(symbol)
                continue
            self._evaluate(watches.values(), latest[0], now)
        newly = stale - self.stale
        if newly:
            logger.warning("stale prices; positions not evaluated symbols=%s", ",".join(sorted(newly)))
        self.stale = stale

    def trailing_to_persist(self) -> list[tuple[uuid.UUID, TrailingState]]:
        """Trailing stops moved since last persisted (each at most once per `trailing_persist_secs`)."""
        now = self._clock.monotonic()
        return [
            (watch.id, watch.trailing_state)
            for watch in list(self._watches.values())
            if not watch.closing
            and watch.trailing_state != watch.persisted
            and now - watch.persisted_at >= self._config.trailing_persist_secs
        ]

    def trailing_persisted(self, position_id: uuid.UUID, state: TrailingState) -> None:
        watch = self._watches.get(position_id)
        if watch is not None:
            watch.persisted, watch.persisted_at = state, self._clock.monotonic()


def _tighter(side: PositionSide, ours: TrailingState, theirs: TrailingState) -> TrailingState:
    if ours.stop_price is None:
        return theirs
    if theirs.stop_price is None:
        return ours
    long = side is PositionSide.LONG
    return (
        theirs
        if (theirs.stop_price > ours.stop_price if long else theirs.stop_price < ours.stop_price)
        else ours
    )
