"""The helpers signal code calls (`get_latest_rsi(k, 14)`, ...): the newest value of each indicator.

Every helper takes a `Klines` series (oldest candle first) and returns a float (or a tuple of floats); the
result is NaN when the series is too short for the indicator. They are thin wrappers over `series`, so the
values match the full-series functions exactly. The catalog the LLM prompt is built from is generated from
`__all__` and the first line of each docstring (`python -m worker.indicators.catalog`).
"""

from __future__ import annotations

import math

from worker.indicators import series
from worker.market.klines import FloatArray, Klines

__all__ = [
    "get_closes",
    "get_highest_high",
    "get_highs",
    "get_latest_adx",
    "get_latest_aroon",
    "get_latest_atr",
    "get_latest_bollinger_bands",
    "get_latest_cci",
    "get_latest_donchian_channels",
    "get_latest_ema",
    "get_latest_keltner_channels",
    "get_latest_macd",
    "get_latest_obv",
    "get_latest_roc",
    "get_latest_rsi",
    "get_latest_sma",
    "get_latest_stochastic",
    "get_latest_volume",
    "get_latest_volume_change",
    "get_latest_volume_ma",
    "get_latest_vwap",
    "get_latest_williams_r",
    "get_latest_wma",
    "get_lowest_low",
    "get_lows",
    "get_opens",
    "get_price_change",
    "get_price_change_percent",
    "get_volumes",
]


def _last(values: FloatArray) -> float:
    return float(values[-1]) if len(values) else math.nan


def _tail(values: FloatArray, period: int, extra: int = 0) -> FloatArray:
    """The last period+extra values: enough for windowed indicators, and checks `period` first."""
    return values[-(series.check_period(period) + extra) :]


# Prices --------------------------------------------------------------------------------------------------
def get_closes(k: Klines) -> FloatArray:
    """Close prices, oldest first (a read-only numpy array)."""
    return k.close


def get_opens(k: Klines) -> FloatArray:
    """Open prices, oldest first (a read-only numpy array)."""
    return k.open


def get_highs(k: Klines) -> FloatArray:
    """High prices, oldest first (a read-only numpy array)."""
    return k.high


def get_lows(k: Klines) -> FloatArray:
    """Low prices, oldest first (a read-only numpy array)."""
    return k.low


def get_volumes(k: Klines) -> FloatArray:
    """Base-asset volumes, oldest first (a read-only numpy array)."""
    return k.volume


def get_price_change(k: Klines, periods: int = 1) -> float:
    """Latest close minus the close `periods` candles earlier."""
    return _last(series.change(k.close, periods))


def get_price_change_percent(k: Klines, periods: int = 1) -> float:
    """Percent change of the latest close from the close `periods` candles earlier."""
    return _last(series.change_percent(k.close, periods))


def get_highest_high(k: Klines, periods: int = 20) -> float:
    """Highest high of the last `periods` candles (the latest included)."""
    return _last(series.highest(_tail(k.high, periods), periods))


def get_lowest_low(k: Klines, periods: int = 20) -> float:
    """Lowest low of the last `periods` candles (the latest included)."""
    return _last(series.lowest(_tail(k.low, periods), periods))


# Moving averages -----------------------------------------------------------------------------------------
def get_latest_sma(k: Klines, period: int = 20) -> float:
    """Simple moving average of the last `period` closes."""
    return _last(series.sma(_tail(k.close, period), period))


def get_latest_ema(k: Klines, period: int = 20) -> float:
    """Exponential moving average of closes (alpha 2/(period+1), seeded with the first period's SMA)."""
    return _last(series.ema(k.close, period))


def get_latest_wma(k: Klines, period: int = 20) -> float:
    """Linearly weighted moving average of the last `period` closes (newest weighs most)."""
    return _last(series.wma(_tail(k.close, period), period))


def get_latest_vwap(k: Klines) -> float:
    """Volume-weighted average of the typical price (h+l+c)/3 since the start of the current UTC day."""
    return _last(series.vwap(k.high, k.low, k.close, k.volume, k.open_time))


# Momentum ------------------------------------------------------------------------------------------------
def get_latest_rsi(k: Klines, period: int = 14) -> float:
    """Wilder's RSI of closes, 0..100 (50 when the price has not moved)."""
    return _last(series.rsi(k.close, period))


def get_latest_macd(k: Klines, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[float, float, float]:
    """MACD of closes as (macd, signal, histogram): EMA(fast) - EMA(slow), its EMA(signal), difference."""
    lines = series.macd(k.close, fast, slow, signal)
    return _last(lines.macd), _last(lines.signal), _last(lines.histogram)


def get_latest_stochastic(k: Klines, k_period: int = 14, d_period: int = 3) -> tuple[float, float]:
    """Fast stochastic as (%K, %D), 0..100: close within the k_period high-low range; %D its SMA."""
    lines = series.stochastic(k.high, k.low, k.close, k_period, d_period)
    return _last(lines.k), _last(lines.d)


def get_latest_cci(k: Klines, period: int = 20) -> float:
    """Commodity Channel Index of the typical price (h+l+c)/3 (about -100..100 in normal markets)."""
    return _last(series.cci(k.high, k.low, k.close, period))


def get_latest_williams_r(k: Klines, period: int = 14) -> float:
    """Williams %R, -100..0: where the close sits in the `period` high-low range (0 = at the high)."""
    return _last(series.williams_r(k.high, k.low, k.close, period))


def get_latest_roc(k: Klines, period: int = 10) -> float:
    """Rate of change: percent change of the close over `period` candles."""
    return _last(series.roc(k.close, period))


# Volatility ----------------------------------------------------------------------------------------------
def get_latest_bollinger_bands(
    k: Klines, period: int = 20, std_dev: float = 2.0
) -> tuple[float, float, float]:
    """Bollinger Bands as (upper, middle, lower): SMA(period) +/- std_dev population standard deviations."""
    bands = series.bollinger_bands(_tail(k.close, period), period, std_dev)
    return _last(bands.upper), _last(bands.middle), _last(bands.lower)


def get_latest_atr(k: Klines, period: int = 14) -> float:
    """Average true range (Wilder's smoothing), in price units."""
    return _last(series.atr(k.high, k.low, k.close, period))


def get_latest_keltner_channels(
    k: Klines, period: int = 20, atr_period: int = 10, multiplier: float = 2.0
) -> tuple[float, float, float]:
    """Keltner Channels as (upper, middle, lower): EMA(period) of closes +/- multiplier * ATR(atr_period)."""
    bands = series.keltner_channels(
        k.high, k.low, k.close, period=period, atr_period=atr_period, multiplier=multiplier
    )
    return _last(bands.upper), _last(bands.middle), _last(bands.lower)


def get_latest_donchian_channels(k: Klines, period: int = 20) -> tuple[float, float, float]:
    """Donchian Channels as (upper, middle, lower): highest high, midpoint, lowest low of `period` candles."""
    bands = series.donchian_channels(k.high, k.low, period)
    return _last(bands.upper), _last(bands.middle), _last(bands.lower)


# Volume --------------------------------------------------------------------------------------------------
def get_latest_volume(k: Klines, period: int = 1) -> float:
    """Total base-asset volume of the last `period` candles (period=1: the latest candle's volume)."""
    return _last(series.rolling_sum(_tail(k.volume, period), period))


def get_latest_volume_change(k: Klines, period: int = 20) -> float:
    """Percent change of the latest volume from the average volume of the `period` candles before it."""
    return _last(series.volume_change(_tail(k.volume, period, extra=1), period))


def get_latest_obv(k: Klines) -> float:
    """On-balance volume over the whole series (volume added on up closes, subtracted on down closes)."""
    return _last(series.obv(k.close, k.volume))


def get_latest_volume_ma(k: Klines, period: int = 20) -> float:
    """Simple moving average of the last `period` volumes."""
    return _last(series.sma(_tail(k.volume, period), period))


# Trend ---------------------------------------------------------------------------------------------------
def get_latest_adx(k: Klines, period: int = 14) -> float:
    """Average Directional Index (Wilder), 0..100: trend strength regardless of direction."""
    return _last(series.adx(k.high, k.low, k.close, period))


def get_latest_aroon(k: Klines, period: int = 25) -> tuple[float, float]:
    """Aroon as (up, down), 0..100: how recently the `period` highest high / lowest low occurred."""
    lines = series.aroon(k.high, k.low, period)
    return _last(lines.up), _last(lines.down)
