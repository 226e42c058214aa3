"""The trigger of trader timers: fire on the UTC grid of a period (on the market clock), never drifting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


class GridTrigger:
    """Fire at every UTC multiple of `period_secs` (since the Unix epoch) plus `offset_secs`.

    Unlike an interval timer, the grid never drifts: the next fire time is computed from the
    clock, not from the previous run, so an early run (a candle-close event moving the job forward) leaves
    the grid where it was. Binance candles open on the same UTC grid, so `offset_secs` after a multiple
    of a timeframe is `offset_secs` after that timeframe's candle closed.
    """

    __slots__ = ("_offset_us", "_period_us", "offset_secs", "period_secs")

    def __init__(self, period_secs: float, offset_secs: float = 0.0) -> None:
        if period_secs <= 0:
            raise ValueError("period_secs must be positive")
        self.period_secs = period_secs
        self.offset_secs = offset_secs % period_secs
        self._period_us = round(period_secs * 1_000_000)
        self._offset_us = round(self.offset_secs * 1_000_000)

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        """The first grid point after `previous_fire_time` and not before `now` (missed runs are
        coalesced into one: the worker never catches up on stale runs)."""
        after = now if previous_fire_time is None else max(previous_fire_time + _ONE_US, now)
        elapsed_us = (after - _EPOCH) // _ONE_US - self._offset_us
        periods = -(-elapsed_us // self._period_us)  # ceiling, in integers: no float drift
        return _EPOCH + _ONE_US * (periods * self._period_us + self._offset_us)

    def __str__(self) -> str:
        return f"grid[period={self.period_secs}s, offset={self.offset_secs}s]"

    def __repr__(self) -> str:
        return f"<GridTrigger (period_secs={self.period_secs}, offset_secs={self.offset_secs})>"
