"""The helpers signal code calls (`get_latest_rsi(k, 14)`, ...): the newest value of each indicator.

Every helper takes a `Klines` series (oldest candle first) and returns a float (or a tuple of floats); the
result is NaN when the series is too short for the indicator. Each gives the newest value of its `series`
function (the tests hold them to it) the cheapest way TA-Lib allows: windowed indicators on just the
candles their window needs, the others in one TA-Lib call. The catalog the LLM prompt is built from is
generated from `__all__` and the first line of each docstring (`python -m worker.indicators.catalog`).
"""

from __future__ import annotations

import math

import talib

from worker.indicators import series
from worker.indicators.series import MAX_PERIOD, check_period
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


# TA-Lib's MACD and ADX seed their averages differently from `series` (see there), and the seed's weight
# decays by `decay` per candle. Once what is left of it after `steps` candles, steps * decay**steps (the
# factor `steps` allows for the second average on top), is below this, one TA-Lib call gives our value to
# about 1e-12 relative: the helpers take that shortcut.
_SEED_WEIGHT_LEFT = 2.0**-40


def _last(values: FloatArray) -> float:
    return values.item(-1) if len(values) else math.nan


def _tail(values: FloatArray, period: int, extra: int = 0) -> FloatArray:
    """The last period+extra values: enough for windowed indicators, and checks `period` first."""
    return values[-(check_period(period) + extra) :]


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
    periods = check_period(periods, "periods")
    close = k.close
    if len(close) <= periods:
        return math.nan
    return float(close[-1]) - float(close[-1 - periods])  # what talib.MOM computes, for one candle


def get_price_change_percent(k: Klines, periods: int = 1) -> float:
    """Percent change of the latest close from the close `periods` candles earlier."""
    periods = check_period(periods, "periods")
    close = k.close
    if len(close) <= periods or close[-1 - periods] == 0.0:
        return math.nan
    return (float(close[-1]) / float(close[-1 - periods]) - 1.0) * 100.0  # talib.ROC's arithmetic


def get_highest_high(k: Klines, periods: int = 20) -> float:
    """Highest high of the last `periods` candles (the latest included)."""
    high = _tail(k.high, periods)
    return _last(talib.MAX(high, periods) if periods > 1 else high)


def get_lowest_low(k: Klines, periods: int = 20) -> float:
    """Lowest low of the last `periods` candles (the latest included)."""
    low = _tail(k.low, periods)
    return _last(talib.MIN(low, periods) if periods > 1 else low)


# Moving averages -----------------------------------------------------------------------------------------
def get_latest_sma(k: Klines, period: int = 20) -> float:
    """Simple moving average of the last `period` closes."""
    return _last(talib.SMA(_tail(k.close, period), period))


def get_latest_ema(k: Klines, period: int = 20) -> float:
    """Exponential moving average of closes (alpha 2/(period+1), seeded with the first period's SMA)."""
    return _last(talib.EMA(k.close, check_period(period)))


def get_latest_wma(k: Klines, period: int = 20) -> float:
    """Linearly weighted moving average of the last `period` closes (newest weighs most)."""
    return _last(talib.WMA(_tail(k.close, period), period))


def get_latest_vwap(k: Klines) -> float:
    """Volume-weighted average of the typical price (h+l+c)/3 since the start of the current UTC day."""
    times = k.open_time
    if not len(times):
        return math.nan
    last: int = times.item(-1)
    session_ms = last - last % series.DAY_MS
    high, low, close, volume = k.high, k.low, k.close, k.volume
    if times.item(0) < session_ms:  # talib.VWAP has no anchor: give it the session's candles only
        start = int(times.searchsorted(session_ms))
        high, low, close, volume = high[start:], low[start:], close[start:], volume[start:]
    value = _last(talib.VWAP(high, low, close, volume))
    if value == 0.0 and not volume.any():
        return math.nan  # talib.VWAP says 0 before the session's first trade
    return value


# Momentum ------------------------------------------------------------------------------------------------
def get_latest_rsi(k: Klines, period: int = 14) -> float:
    """Wilder's RSI of closes, 0..100 (50 when the price has not moved)."""
    period = check_period(period)
    if period > 1:
        value = _last(talib.RSI(k.close, period))
        if value != 0.0:  # 0 means falling, or flat since the first close: `series` tells them apart
            return value
    return _last(series.rsi(k.close, period))


def get_latest_macd(k: Klines, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[float, float, float]:
    """MACD of closes as (macd, signal, histogram): EMA(fast) - EMA(slow), its EMA(signal), difference."""
    close = k.close
    # Valid int periods with fast < slow may take the one-call shortcut; `series` checks anything else.
    if (
        type(fast) is type(slow) is type(signal) is int
        and 1 < fast < slow <= MAX_PERIOD
        and 1 < signal <= MAX_PERIOD
    ):
        steps = len(close) - slow
        decay = 1.0 - 2.0 / ((fast if fast > signal else signal) + 1)  # the slower of the two EMAs
        if steps > 0 and steps * decay**steps < _SEED_WEIGHT_LEFT:
            line, signal_line, histogram = talib.MACD(close, fast, slow, signal)
            return line.item(-1), signal_line.item(-1), histogram.item(-1)
    lines = series.macd(close, fast, slow, signal)
    return _last(lines.macd), _last(lines.signal), _last(lines.histogram)


def get_latest_stochastic(k: Klines, k_period: int = 14, d_period: int = 3) -> tuple[float, float]:
    """Fast stochastic as (%K, %D), 0..100: close within the k_period high-low range; %D its SMA."""
    k_period = check_period(k_period, "k_period")
    d_period = check_period(d_period, "d_period")
    # %D needs the last d_period values of %K, each of which needs k_period candles.
    count = k_period + d_period - 1
    high, low, close = k.high[-count:], k.low[-count:], k.close[-count:]
    if len(close) == count:
        last_k = talib.STOCHF(high, low, close, k_period, 1)[0][-d_period:].tolist()
        if 0.0 not in last_k:  # a 0 may be a flat window, which `series` reads as 50
            return last_k[-1], sum(last_k) / d_period  # talib.SMA's arithmetic on its first window
    lines = series.stochastic(high, low, close, k_period, d_period)
    return _last(lines.k), _last(lines.d)


def get_latest_cci(k: Klines, period: int = 20) -> float:
    """Commodity Channel Index of the typical price (h+l+c)/3 (about -100..100 in normal markets)."""
    return _last(series.cci(_tail(k.high, period), _tail(k.low, period), _tail(k.close, period), period))


def get_latest_williams_r(k: Klines, period: int = 14) -> float:
    """Williams %R, -100..0: where the close sits in the `period` high-low range (0 = at the high)."""
    high, low, close = _tail(k.high, period), _tail(k.low, period), _tail(k.close, period)
    if period > 1:
        value = _last(talib.WILLR(high, low, close, period))
        if value != 0.0:  # 0 may be a flat window, which `series` reads as -50
            return value
    return _last(series.williams_r(high, low, close, period))


def get_latest_roc(k: Klines, period: int = 10) -> float:
    """Rate of change: percent change of the close over `period` candles."""
    return get_price_change_percent(k, period)


# Volatility ----------------------------------------------------------------------------------------------
def get_latest_bollinger_bands(
    k: Klines, period: int = 20, std_dev: float = 2.0
) -> tuple[float, float, float]:
    """Bollinger Bands as (upper, middle, lower): SMA(period) +/- std_dev population standard deviations."""
    bands = series.bollinger_bands(_tail(k.close, period), period, std_dev)
    return _last(bands.upper), _last(bands.middle), _last(bands.lower)


def get_latest_atr(k: Klines, period: int = 14) -> float:
    """Average true range (Wilder's smoothing), in price units."""
    return _last(talib.ATR(k.high, k.low, k.close, check_period(period)))


def get_latest_keltner_channels(
    k: Klines, period: int = 20, atr_period: int = 10, multiplier: float = 2.0
) -> tuple[float, float, float]:
    """Keltner Channels as (upper, middle, lower): EMA(period) of closes +/- multiplier * ATR(atr_period)."""
    middle = _last(talib.EMA(k.close, check_period(period)))
    width = multiplier * _last(talib.ATR(k.high, k.low, k.close, check_period(atr_period, "atr_period")))
    return middle + width, middle, middle - width


def get_latest_donchian_channels(k: Klines, period: int = 20) -> tuple[float, float, float]:
    """Donchian Channels as (upper, middle, lower): highest high, midpoint, lowest low of `period` candles."""
    bands = series.donchian_channels(_tail(k.high, period), _tail(k.low, period), period)
    return _last(bands.upper), _last(bands.middle), _last(bands.lower)


# Volume --------------------------------------------------------------------------------------------------
def get_latest_volume(k: Klines, period: int = 1) -> float:
    """Total base-asset volume of the last `period` candles (period=1: the latest candle's volume)."""
    return _last(series.rolling_sum(_tail(k.volume, period), period))


def get_latest_volume_change(k: Klines, period: int = 20) -> float:
    """Percent change of the latest volume from the average volume of the `period` candles before it."""
    relative = _last(talib.RVOL(_tail(k.volume, period, extra=1), period))
    # No volume before it (TA-Lib divides by the zero average: inf, or NaN for 0/0): no percentage
    # describes the change.
    return 100.0 * (relative - 1.0) if relative != math.inf else math.nan


def get_latest_obv(k: Klines) -> float:
    """On-balance volume over the whole series (volume added on up closes, subtracted on down closes)."""
    return _last(talib.OBV(k.close, k.volume))


def get_latest_volume_ma(k: Klines, period: int = 20) -> float:
    """Simple moving average of the last `period` volumes."""
    return _last(talib.SMA(_tail(k.volume, period), period))


# Trend ---------------------------------------------------------------------------------------------------
def get_latest_adx(k: Klines, period: int = 14) -> float:
    """Average Directional Index (Wilder), 0..100: trend strength regardless of direction."""
    period = check_period(period)
    steps = len(k.close) - 2 * period
    if period > 1 and steps > 0 and steps * (1.0 - 1.0 / period) ** steps < _SEED_WEIGHT_LEFT:
        return _last(talib.ADX(k.high, k.low, k.close, period))
    return _last(series.adx(k.high, k.low, k.close, period))


def get_latest_aroon(k: Klines, period: int = 25) -> tuple[float, float]:
    """Aroon as (up, down), 0..100: how recently the `period` highest high / lowest low occurred."""
    lines = series.aroon(_tail(k.high, period, extra=1), _tail(k.low, period, extra=1), period)
    return _last(lines.up), _last(lines.down)
