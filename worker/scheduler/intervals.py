"""Trader timer intervals (`5m`, `5m_close`) as clock periods, and the APScheduler trigger for them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger

from worker.errors import ConfigError
from worker.market.klines import INTERVAL_MS

# The fixed-clock intervals a trader may use (the database's private.is_timer_interval, without _close).
FIXED_INTERVAL_SECS: dict[str, int] = {
    "1s": 1, "5s": 5, "10s": 10, "15s": 15, "30s": 30, "1m": 60, "3m": 180, "5m": 300, "15m": 900,
    "30m": 1800, "1h": 3600, "2h": 7200, "4h": 14_400, "6h": 21_600, "12h": 43_200, "1d": 86_400,
}  # fmt: skip
CLOSE_SUFFIX = "_close"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class TimerInterval:
    """When a trader's job runs: every `period_secs` on the UTC clock, or right after a candle closes.

    `timeframe` is set for `<tf>_close` intervals: the job runs when the feed delivers the closing kline of
    that timeframe, and a wall-clock fallback runs `period_secs` apart, a few seconds after each close.
    """

    text: str
    period_secs: int
    timeframe: str | None = None

    @property
    def on_close(self) -> bool:
        return self.timeframe is not None


def parse_interval(text: str) -> TimerInterval:
    """Parse `1s`..`1d` or `<timeframe>_close`.

    Raises:
        ConfigError: the interval is not one the worker supports (the database refuses these too).
    """
    if text.endswith(CLOSE_SUFFIX):
        timeframe = text.removesuffix(CLOSE_SUFFIX)
        if timeframe in INTERVAL_MS:
            return TimerInterval(text, INTERVAL_MS[timeframe] // 1000, timeframe)
    elif text in FIXED_INTERVAL_SECS:
        return TimerInterval(text, FIXED_INTERVAL_SECS[text])
    raise ConfigError(f"unknown timer interval {text!r}")


class GridTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler ships no type hints
    """Fire at every UTC multiple of `period_secs` (since the Unix epoch) plus `offset_secs`.

    Unlike APScheduler's IntervalTrigger, the grid never drifts: the next fire time is computed from the
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
