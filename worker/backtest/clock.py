"""A backtest's market clock: it stands still until the backtest steps it to the next moment."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime


class SteppedClock:
    """Market time of a replay (a Clock, a timer clock, and its own market time line: the memory store's
    rows are stamped with it). Sleepers wake when the backtest steps past their moment."""

    def __init__(self, start_ms: int) -> None:
        self._ms = start_ms
        self._moved = asyncio.Event()

    def now_ms(self) -> int:
        return self._ms

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._ms / 1000, UTC)

    def monotonic(self) -> float:
        return self._ms / 1000

    def step_to(self, market_ms: int) -> None:
        if market_ms < self._ms:
            raise ValueError(f"a backtest's clock only moves forwards ({market_ms} < {self._ms})")
        self._ms = market_ms
        self._moved.set()
        self._moved = asyncio.Event()

    async def sleep(self, secs: float) -> None:
        await self.sleep_until(self._ms + secs * 1000)

    async def sleep_until(self, market_ms: float, wake: asyncio.Event | None = None) -> None:
        while self._ms < market_ms and not (wake is not None and wake.is_set()):
            moved = asyncio.ensure_future(self._moved.wait())
            waiters = [moved] + ([asyncio.ensure_future(wake.wait())] if wake is not None else [])
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    def to_market(self, wall_time: datetime) -> datetime:
        return wall_time  # the backtest's rows carry its own (market) time

    def to_wall(self, market_time: datetime) -> datetime:
        return market_time
