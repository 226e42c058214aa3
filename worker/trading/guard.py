"""The position guard: the component that acts on what the position monitor sees.

It closes every exit the monitor triggers (one task per close, under the guard's TaskGroup), and every
`monitor_sweep_interval_secs` it sweeps the monitor (stale prices, levels moved since the last price),
persists ratcheted trailing stops, and reconciles exchange-side exits so a stop that filled on the
exchange is recorded once and never closed twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from decimal import Decimal
from typing import Protocol

from worker.clock import Clock
from worker.components import ComponentState
from worker.domain.positions import CloseReason, TrailingState
from worker.errors import WorkerError
from worker.trading.config import TradingConfig
from worker.trading.monitor import ExitRequest, PositionMonitor

logger = logging.getLogger(__name__)


class Exits(Protocol):
    """What the guard asks of protection (worker/trading/protection.py)."""

    async def close_for_monitor(
        self, position_id: uuid.UUID, reason: CloseReason, price: Decimal
    ) -> None: ...

    async def record_trailing(self, position_id: uuid.UUID, state: TrailingState) -> None: ...

    async def reconcile_exchange_exits(self) -> int: ...


class PositionGuard:
    """Runs the position monitor's exits and upkeep (a Component)."""

    name = "position-monitor"

    def __init__(
        self, monitor: PositionMonitor, exits: Exits, config: TradingConfig, *, clock: Clock
    ) -> None:
        self._monitor = monitor
        self._exits = exits
        self._config = config
        self._clock = clock
        self._state = ComponentState.STARTING

    def state(self) -> ComponentState:
        return self._state

    async def prepare_shutdown(self) -> None:
        # Positions stay guarded until the process ends: exchange-side orders in real mode, and in paper
        # mode nothing can be closed once the worker is gone anyway. Nothing to drain here.
        return None

    async def close_triggered(self) -> int:
        """Close every exit the monitor has triggered, one after the other (a replay moves the market on only
        when they are done); returns how many."""
        closed = 0
        while (request := self._monitor.pending_exit()) is not None:
            await self._close(request)
            closed += 1
        return closed

    async def run(self) -> None:
        self._state = ComponentState.RUNNING
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._sweep_loop(), name="monitor-sweep")
                while True:
                    request = await self._monitor.next_exit()
                    group.create_task(self._close(request), name=f"monitor-close-{request.position_id}")
        finally:
            self._state = ComponentState.STOPPED

    async def _close(self, request: ExitRequest) -> None:
        try:
            await self._exits.close_for_monitor(request.position_id, request.reason, request.price)
        except Exception as error:
            logger.error(
                "monitor close failed; will retry on the next price position_id=%s reason=%s error=%s",
                request.position_id, request.reason, error,
            )  # fmt: skip
            self._monitor.exit_failed(request.position_id)

    async def _persist_trailing(self, position_id: uuid.UUID, trailing: TrailingState) -> None:
        try:
            await self._exits.record_trailing(position_id, trailing)
        except WorkerError as error:
            # Tried again at the next sweep (a position that closed meanwhile is no longer watched).
            logger.warning("trailing stop not persisted position_id=%s error=%s", position_id, error)
            return
        self._monitor.trailing_persisted(position_id, trailing)

    async def _sweep_loop(self) -> None:
        last_reconcile = 0.0
        while True:
            await self._clock.sleep(self._config.monitor_sweep_interval_secs)
            try:
                self._monitor.sweep()
                self._state = ComponentState.DEGRADED if self._monitor.stale else ComponentState.RUNNING
                # Side by side, so they reach the database as one batch (worker/db/batching.py).
                async with asyncio.TaskGroup() as group:
                    for position_id, trailing in self._monitor.trailing_to_persist():
                        group.create_task(self._persist_trailing(position_id, trailing))
                now = self._clock.monotonic()
                if now - last_reconcile >= self._config.reconcile_interval_secs:
                    last_reconcile = now
                    closed = await self._exits.reconcile_exchange_exits()
                    if closed:
                        logger.info("exchange-side exits recorded count=%d", closed)
            except Exception:
                # One failed sweep (a network blip while reconciling) must not end the guard.
                logger.exception("monitor sweep failed")
