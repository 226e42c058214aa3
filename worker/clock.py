"""Time for the worker: UTC-aware `now()` and `sleep()` behind a protocol, so tests can move time.

Two clocks run in a worker. `LiveClock` is the process's own time: network timeouts, retries, heartbeats,
token renewal. `MarketClock` is the market's time as the exchange reports it: everything a strategy means
by time (cooldowns, the analysis budget, timers and re-analysis, stale data, the daily loss window) reads
it, so a market replayed at any speed is traded exactly as the same market would be live. Live on
Binance the two agree to a network latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import Final, Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, UTC-aware."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for timeouts and staleness)."""
        ...

    async def sleep(self, secs: float) -> None: ...


class MarketTime(Clock, Protocol):
    """A clock that can place moments stamped on the wall clock (database rows) on its own time line."""

    def to_market(self, wall_time: datetime) -> datetime: ...

    def to_wall(self, market_time: datetime) -> datetime: ...


class LiveClock:
    """The real clock (and, live, the market's: the identity maps between them)."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, secs: float) -> None:
        await asyncio.sleep(secs)

    async def sleep_until(self, moment_ms: float, wake: asyncio.Event | None = None) -> None:
        """Until Unix time `moment_ms`, or until `wake` is set."""
        secs = max(0.0, moment_ms / 1000 - time.time())
        if wake is None:
            await asyncio.sleep(secs)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(secs):
                await wake.wait()

    def to_market(self, wall_time: datetime) -> datetime:
        return wall_time

    def to_wall(self, market_time: datetime) -> datetime:
        return market_time


# A market sample that misses the prediction by more than this means the market's pace changed (a replay
# paused, resumed, sped up or jumped): the pace is measured again from the samples that follow.
_SURPRISE_MS: Final = 250.0
_SURPRISE_FRACTION: Final = 0.05
# A sleeper re-reads market time at least this often (wall seconds): the pace may change while it waits.
_MAX_WAIT_SECS: Final = 0.5


class MarketClock:
    """The market's time: the exchange's clock as last observed, carried forward at its observed pace.

    `sync` takes the exchange's server time (a REST round trip, read at its midpoint); `observe` takes the
    event time of a market message, which can only move the clock forward. The pace (market ms per wall
    ms: 1 live, the speed of a replay, 0 while a replay is paused) is the slope of the server-time samples
    since the last surprise; until a second sample after a surprise has measured it, the clock holds (so a
    replay that jumps never makes it race ahead). It never goes backwards. Before any sample it is the
    wall clock.
    """

    def __init__(self, wall: Clock | None = None) -> None:
        self._wall = wall or LiveClock()
        self._anchor_wall = self._wall.monotonic()
        self._anchor_ms = self._wall.now().timestamp() * 1000
        self._floor_ms = self._anchor_ms
        self._rate = 1.0  # used while `_pace_known`; before any sample the clock is the wall clock
        self._pace_known = True
        self._first: tuple[float, float] | None = None  # (wall secs, server ms) the pace is measured from
        self._last: tuple[float, float] | None = None
        self._heard = False  # whether the market has said its time yet (until then: the wall clock)
        self._moved = asyncio.Event()

    # Reading -----------------------------------------------------------------------------------------
    def now_ms(self) -> float:
        """Market time in Unix ms."""
        rate = self._rate if self._pace_known else 0.0
        projected = self._anchor_ms + (self._wall.monotonic() - self._anchor_wall) * 1000 * rate
        self._floor_ms = max(self._floor_ms, projected)
        return self._floor_ms

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ms() / 1000, UTC)

    def monotonic(self) -> float:
        """Market seconds since the epoch (never backwards)."""
        return self.now_ms() / 1000

    @property
    def rate(self) -> float:
        """Market seconds per wall second as last measured (0 while unknown or paused)."""
        return self._rate if self._pace_known else 0.0

    def to_market(self, wall_time: datetime) -> datetime:
        """The market time of a moment stamped on the wall clock (a database row's `now()`), by its age."""
        return self.now() - (self._wall.now() - wall_time) * self.rate

    def to_wall(self, market_time: datetime) -> datetime:
        """The wall time of a market moment, by its age (for reading rows stamped on the wall clock)."""
        rate = self.rate if self.rate > 0 else 1.0
        return self._wall.now() - (self.now() - market_time) / rate

    # Waiting -----------------------------------------------------------------------------------------
    async def sleep(self, secs: float) -> None:
        """Until `secs` of market time have passed."""
        await self.sleep_until(self.now_ms() + secs * 1000)

    async def sleep_until(self, market_ms: float, wake: asyncio.Event | None = None) -> None:
        """Until market time reaches `market_ms`, or until `wake` is set (whichever comes first)."""
        while (remaining_ms := market_ms - self.now_ms()) > 0:
            if wake is not None and wake.is_set():
                return
            wait_secs = _MAX_WAIT_SECS
            if self.rate > 0:
                wait_secs = min(wait_secs, remaining_ms / 1000 / self.rate)
            self._moved.clear()
            waiters = [asyncio.ensure_future(self._moved.wait())]
            if wake is not None:
                waiters.append(asyncio.ensure_future(wake.wait()))
            try:
                await asyncio.wait(
                    waiters, timeout=max(wait_secs, 0.001), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()

    # Samples -----------------------------------------------------------------------------------------
    def sync(self, server_ms: float, sent_wall: float, received_wall: float) -> None:
        """The exchange said `server_ms` to a request sent at `sent_wall`, answered at `received_wall`
        (the wall clock's monotonic seconds)."""
        at = (sent_wall + received_wall) / 2
        first, last = self._first, self._last
        if first is None or last is None or at <= last[0]:
            self._first = (at, server_ms)
            self._pace_known = False
        else:
            rate = self._rate if self._pace_known else 0.0
            predicted = last[1] + (at - last[0]) * 1000 * rate
            tolerance = max(_SURPRISE_MS, _SURPRISE_FRACTION * (at - last[0]) * 1000 * max(rate, 1.0))
            if self._pace_known and abs(server_ms - predicted) > tolerance:
                self._first, self._pace_known = (at, server_ms), False  # a new pace: measure it again
            else:
                self._rate = max(0.0, (server_ms - first[1]) / ((at - first[0]) * 1000))
                self._pace_known = True
        self._last = (at, server_ms)
        self._set_anchor(at, server_ms)

    def observe(self, market_ms: float) -> None:
        """A market event stamped `market_ms` arrived: market time is at least that now."""
        if market_ms > self.now_ms() or not self._heard:
            self._set_anchor(self._wall.monotonic(), market_ms)

    def _set_anchor(self, at: float, market_ms: float) -> None:
        # Never backwards once the market has spoken: a sample behind what the clock already said only
        # holds it where it is. The first one replaces the wall clock's stand-in time, whichever way.
        if self._heard:
            market_ms = max(market_ms, self.now_ms())
        self._heard = True
        self._anchor_wall, self._anchor_ms = at, market_ms
        self._floor_ms = market_ms
        self._moved.set()


def day_start(moment: datetime) -> datetime:
    """Midnight UTC of `moment`'s day (the daily loss limit's window)."""
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)
