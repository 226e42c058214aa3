"""The intervals the worker knows, in one place: Binance kline timeframes and trader timers (`5m_close`)."""

from __future__ import annotations

from dataclasses import dataclass

from worker.errors import ConfigError

# Binance's kline intervals a trader may follow (private.is_timeframe_list), with their length.
INTERVAL_MS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}
# The fixed-clock intervals a trader may use (private.is_timer_interval without `_close`): seconds, then
# every timeframe but 8h.
FIXED_INTERVAL_SECS: dict[str, int] = {"1s": 1, "5s": 5, "10s": 10, "15s": 15, "30s": 30} | {
    timeframe: length_ms // 1000 for timeframe, length_ms in INTERVAL_MS.items() if timeframe != "8h"
}
CLOSE_SUFFIX = "_close"
# A `<tf>_close` timer's wall-clock fallback fires this long after each close (the scheduler's default;
# backtests replay re-analyses at the same moment).
CLOSE_FALLBACK_SECS = 5.0


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
