"""The position monitor: stop-loss, take-profit and trailing stops evaluated on every ticker update.

`on_price` runs synchronously from the market feed's ticker listener for that symbol (cheap, never raises);
a triggered exit is queued and closed by `run`'s task group, one task per close. A 1 s sweep re-evaluates
every symbol with its latest fresh price (new positions, moved levels) and flags symbols whose price is
stale; in real mode the sweep also reconciles exchange-side fills, so a stop that filled on the exchange
is recorded once and never closed twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from worker.clock import Clock, LiveClock
from worker.components import ComponentState
from worker.domain.enums import PositionSide
from worker.market.messages import Ticker
from worker.trading import trailing
from worker.trading.config import TradingConfig
from worker.trading.model import CloseReason, OpenPosition, TrailingMode, TrailingSpec, TrailingState

logger = logging.getLogger(__name__)

Closer = Callable[[uuid.UUID, CloseReason, Decimal], Awaitable[None]]
TrailingRecorder = Callable[[uuid.UUID, TrailingState], Awaitable[None]]
Reconciler = Callable[[], Awaitable[int]]


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
    """Watches every open position; one instance per worker (a Component)."""

    name = "position-monitor"

    def __init__(
        self,
        config: TradingConfig,
        closer: Closer,
        *,
        clock: Clock | None = None,
        atr: Callable[[str], Decimal | None] | None = None,
        record_trailing: TrailingRecorder | None = None,
        reconcile: Reconciler | None = None,
    ) -> None:
        self._config = config
        self._closer = closer
        self._clock = clock or LiveClock()
        self._atr = atr
        self._record_trailing = record_trailing
        self._reconcile = reconcile
        self._watches: dict[uuid.UUID, _Watch] = {}
        self._by_symbol: dict[str, dict[uuid.UUID, _Watch]] = {}
        self._prices: dict[str, tuple[Decimal, float]] = {}
        self._exits: asyncio.Queue[ExitRequest] = asyncio.Queue()
        self._state = ComponentState.STARTING
        self._stale: set[str] = set()
        self._paused = False
        self.closes_started = 0
        self.close_failures = 0

    # Component ----------------------------------------------------------------------------------------
    def state(self) -> ComponentState:
        return self._state

    async def prepare_shutdown(self) -> None:
        # Positions stay guarded until the process ends: exchange-side orders in real mode, and in paper
        # mode nothing can be closed once the worker is gone anyway. Nothing to drain here.
        return None

    async def run(self) -> None:
        self._state = ComponentState.RUNNING
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._sweep_loop(), name="monitor-sweep")
                while True:
                    request = await self._exits.get()
                    group.create_task(self._close(request), name=f"monitor-close-{request.position_id}")
        finally:
            self._state = ComponentState.STOPPED

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

    async def _close(self, request: ExitRequest) -> None:
        self.closes_started += 1
        try:
            await self._closer(request.position_id, request.reason, request.price)
        except Exception as error:
            self.close_failures += 1
            logger.error(
                "monitor close failed; will retry on the next price position_id=%s reason=%s error=%s",
                request.position_id, request.reason, error,
            )  # fmt: skip
            watch = self._watches.get(request.position_id)
            if watch is not None:
                watch.closing = False

    # Safety net ------------------------------------------------------------------------------------
    async def _sweep_loop(self) -> None:
        last_reconcile = 0.0
        while True:
            await self._clock.sleep(self._config.monitor_sweep_interval_secs)
            try:
                self.sweep()
                await self._persist_trailing()
                now = self._clock.monotonic()
                if (
                    self._reconcile is not None
                    and now - last_reconcile >= self._config.reconcile_interval_secs
                ):
                    last_reconcile = now
                    closed = await self._reconcile()
                    if closed:
                        logger.info("exchange-side exits recorded count=%d", closed)
            except Exception:
                # One failed sweep (a network blip while reconciling) must not end the monitor.
                logger.exception("monitor sweep failed")

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
        newly = stale - self._stale
        if newly:
            logger.warning("stale prices; positions not evaluated symbols=%s", ",".join(sorted(newly)))
        self._stale = stale
        self._state = ComponentState.DEGRADED if stale else ComponentState.RUNNING

    async def _persist_trailing(self) -> None:
        if self._record_trailing is None:
            return
        now = time.monotonic()
        for watch in list(self._watches.values()):
            if watch.closing or watch.trailing_state == watch.persisted:
                continue
            if now - watch.persisted_at < self._config.trailing_persist_secs:
                continue
            state = watch.trailing_state
            await self._record_trailing(watch.id, state)
            watch.persisted, watch.persisted_at = state, now


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
