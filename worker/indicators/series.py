"""Full-series technical indicators: vectorised numpy, float64, NaN during each indicator's warm-up.

Definitions follow the reference libraries traders compare against (TA-Lib, pandas-ta, TradingView):
EMAs are seeded with the SMA of their first `period` values, RSI/ATR/ADX use Wilder's smoothing, Bollinger
Bands use the population standard deviation. Leading NaNs in an input (e.g. the MACD line fed to its signal
EMA) are skipped; a NaN inside the data propagates.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

FloatArray = npt.NDArray[np.float64]

DAY_MS = 86_400_000
# Block length for the blocked EMA recursion is chosen so decay**-length stays far from overflow.
_MAX_DECAY_EXPONENT_DECADES = 250.0
_MAX_BLOCK = 4096


class Bands(NamedTuple):
    upper: FloatArray
    middle: FloatArray
    lower: FloatArray


class MacdLines(NamedTuple):
    macd: FloatArray
    signal: FloatArray
    histogram: FloatArray


class StochasticLines(NamedTuple):
    k: FloatArray
    d: FloatArray


class AroonLines(NamedTuple):
    up: FloatArray
    down: FloatArray


def _as_float(values: npt.ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"expected a one-dimensional series, got shape {array.shape}")
    return array


def check_period(period: int, name: str = "period") -> int:
    """Return `period` as an int, or raise ValueError naming the parameter unless it is a positive int."""
    if isinstance(period, bool) or not isinstance(period, int | np.integer) or period < 1:
        raise ValueError(f"{name} must be a positive integer, got {period!r}")
    return int(period)


def _nans(length: int) -> FloatArray:
    return np.full(length, np.nan, dtype=np.float64)


def _first_finite(values: FloatArray) -> int:
    """Index of the first non-NaN value (len(values) if there is none)."""
    finite = ~np.isnan(values)
    return int(finite.argmax()) if finite.any() else len(values)


def _windows(values: FloatArray, period: int) -> npt.NDArray[np.float64]:
    return sliding_window_view(values, period)


# Moving averages -----------------------------------------------------------------------------------------
def sma(values: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Simple moving average: the mean of the last `period` values."""
    x = _as_float(values)
    period = check_period(period)
    out = _nans(len(x))
    start = _first_finite(x)
    tail = x[start:]
    if len(tail) < period:
        return out
    # Each window is summed on its own (pairwise, by numpy): a running cumulative sum would carry the
    # rounding error of every earlier value, so one huge price would blur all later averages. Summing
    # around the first value keeps a constant series exact.
    offset = tail[0]
    windows = np.lib.stride_tricks.sliding_window_view(tail - offset, period)
    out[start + period - 1 :] = offset + windows.sum(axis=1) / period
    return out


def _smooth_recursive(values: FloatArray, alpha: float, seed: float) -> FloatArray:
    """y[0] = seed, y[i] = alpha * values[i] + (1 - alpha) * y[i-1] for i >= 1, in vectorised blocks.

    Inside a block y[j] = decay**(j+1) * carry + alpha * decay**j * cumsum(x[k] * decay**-k); only the
    carry from block to block is a Python loop (a handful of iterations).
    """
    decay = 1.0 - alpha
    out = np.empty(len(values), dtype=np.float64)
    out[0] = seed
    rest = values[1:]
    if len(rest) == 0:
        return out
    if decay <= 0.0:
        out[1:] = rest
        return out
    block = int(min(_MAX_BLOCK, max(1, _MAX_DECAY_EXPONENT_DECADES / -math.log10(decay))))
    block = min(block, len(rest))
    blocks = -(-len(rest) // block)
    padded = np.zeros(blocks * block, dtype=np.float64)
    padded[: len(rest)] = rest
    grid = padded.reshape(blocks, block)
    exponents = np.arange(block, dtype=np.float64)
    growth = decay**-exponents
    shrink = decay**exponents
    partial = alpha * shrink * np.cumsum(grid * growth, axis=1)
    carry_weights = decay * shrink  # decay**(j+1)
    carries = np.empty(blocks, dtype=np.float64)
    carry = seed
    last_weight = carry_weights[-1]
    for index in range(blocks):
        carries[index] = carry
        carry = partial[index, -1] + last_weight * carry
    result = partial + np.outer(carries, carry_weights)
    out[1:] = result.ravel()[: len(rest)]
    return out


def _seeded_average(x: FloatArray, period: int, alpha: float) -> FloatArray:
    out = _nans(len(x))
    start = _first_finite(x)
    if len(x) - start < period:
        return out
    seed_index = start + period - 1
    seed = float(np.mean(x[start : seed_index + 1]))
    out[seed_index:] = _smooth_recursive(x[seed_index:], alpha, seed)
    return out


def ema(values: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Exponential moving average, alpha = 2/(period+1), seeded with the SMA of the first `period` values."""
    period = check_period(period)
    return _seeded_average(_as_float(values), period, 2.0 / (period + 1))


def rma(values: npt.ArrayLike, period: int = 14) -> FloatArray:
    """Wilder's moving average (RMA/SMMA), alpha = 1/period, seeded with the SMA of the first `period`."""
    period = check_period(period)
    return _seeded_average(_as_float(values), period, 1.0 / period)


def wma(values: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Linearly weighted moving average: weights 1..period, the newest value weighing most."""
    x = _as_float(values)
    period = check_period(period)
    out = _nans(len(x))
    if len(x) < period:
        return out
    weights = np.arange(1, period + 1, dtype=np.float64)
    out[period - 1 :] = _windows(x, period) @ weights / weights.sum()
    return out


def vwap(
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    volume: npt.ArrayLike,
    open_time_ms: npt.ArrayLike,
    *,
    anchor_ms: int = DAY_MS,
) -> FloatArray:
    """Volume-weighted average of the typical price (h+l+c)/3, restarting each UTC session of `anchor_ms`.

    NaN while the session has traded no volume yet.
    """
    typical = (_as_float(high) + _as_float(low) + _as_float(close)) / 3.0
    vol = _as_float(volume)
    times = np.asarray(open_time_ms, dtype=np.int64)
    if len(times) == 0:
        return _nans(0)
    session = times // int(anchor_ms)
    starts = np.flatnonzero(np.concatenate(([True], session[1:] != session[:-1])))
    lengths = np.diff(np.concatenate((starts, [len(times)])))
    weighted = np.cumsum(typical * vol)
    volumes = np.cumsum(vol)
    # Subtract what the running sums held before each session began.
    base_weighted = np.repeat(np.concatenate(([0.0], weighted))[starts], lengths)
    base_volume = np.repeat(np.concatenate(([0.0], volumes))[starts], lengths)
    session_volume = volumes - base_volume
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (weighted - base_weighted) / session_volume
    out[session_volume <= 0] = np.nan
    return np.asarray(out, dtype=np.float64)


# Momentum ------------------------------------------------------------------------------------------------
def rsi(close: npt.ArrayLike, period: int = 14) -> FloatArray:
    """Wilder's RSI: 100 - 100/(1 + RMA(gains)/RMA(losses)); 50 when the price has not moved at all."""
    x = _as_float(close)
    period = check_period(period)
    out = _nans(len(x))
    if len(x) <= period:
        return out
    delta = np.diff(x)
    gains = rma(np.clip(delta, 0.0, None), period)
    losses = rma(np.clip(-delta, 0.0, None), period)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = 100.0 - 100.0 / (1.0 + gains / losses)
    values = np.where(losses == 0.0, np.where(gains == 0.0, 50.0, 100.0), values)
    values[np.isnan(gains)] = np.nan
    out[1:] = values
    return out


def macd(close: npt.ArrayLike, fast: int = 12, slow: int = 26, signal: int = 9) -> MacdLines:
    """MACD = EMA(fast) - EMA(slow); signal = EMA(signal) of MACD; histogram = MACD - signal."""
    x = _as_float(close)
    check_period(fast, "fast")
    check_period(slow, "slow")
    check_period(signal, "signal")
    line = ema(x, fast) - ema(x, slow)
    signal_line = ema(line, signal)
    return MacdLines(line, signal_line, line - signal_line)


def highest(values: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Highest value of the last `period` values (the current one included)."""
    return _rolling_extreme(_as_float(values), check_period(period), np.maximum, -np.inf)


def lowest(values: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Lowest value of the last `period` values (the current one included)."""
    return _rolling_extreme(_as_float(values), check_period(period), np.minimum, np.inf)


def _rolling_extreme(x: FloatArray, period: int, ufunc: np.ufunc, fill: float) -> FloatArray:
    """Rolling max/min in O(n) (van Herk/Gil-Werman): per-block prefix and suffix extremes."""
    out = _nans(len(x))
    if len(x) < period:
        return out
    blocks = -(-len(x) // period)
    padded = np.full(blocks * period, fill, dtype=np.float64)
    padded[: len(x)] = x
    grid = padded.reshape(blocks, period)
    prefix = ufunc.accumulate(grid, axis=1).ravel()
    suffix = ufunc.accumulate(grid[:, ::-1], axis=1)[:, ::-1].ravel()
    starts = np.arange(len(x) - period + 1)
    out[period - 1 :] = ufunc(suffix[starts], prefix[starts + period - 1])
    return out


def stochastic(
    high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, k_period: int = 14, d_period: int = 3
) -> StochasticLines:
    """Fast stochastic: %K = 100*(close - lowest low)/(highest high - lowest low), %D = SMA(%K, d_period).

    %K is 50 when the range is zero.
    """
    c = _as_float(close)
    top = highest(high, check_period(k_period, "k_period"))
    bottom = lowest(low, k_period)
    span = top - bottom
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(span > 0, 100.0 * (c - bottom) / span, 50.0)
    k[np.isnan(span)] = np.nan
    return StochasticLines(k, sma(k, check_period(d_period, "d_period")))


def cci(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Commodity Channel Index: (tp - SMA(tp)) / (0.015 * mean absolute deviation), tp = (h+l+c)/3."""
    typical = (_as_float(high) + _as_float(low) + _as_float(close)) / 3.0
    period = check_period(period)
    out = _nans(len(typical))
    if len(typical) < period:
        return out
    windows = _windows(typical, period)
    means = windows.mean(axis=1)
    deviation = np.abs(windows - means[:, None]).mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = (typical[period - 1 :] - means) / (0.015 * deviation)
    out[period - 1 :] = np.where(deviation > 0, values, 0.0)
    return out


def williams_r(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 14) -> FloatArray:
    """Williams %R: -100*(highest high - close)/(highest high - lowest low); -50 when the range is zero."""
    c = _as_float(close)
    top = highest(high, check_period(period))
    bottom = lowest(low, period)
    span = top - bottom
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(span > 0, -100.0 * (top - c) / span, -50.0)
    out[np.isnan(span)] = np.nan
    return np.asarray(out, dtype=np.float64)


def change(values: npt.ArrayLike, periods: int = 1) -> FloatArray:
    """Difference between each value and the one `periods` earlier."""
    x = _as_float(values)
    periods = check_period(periods, "periods")
    out = _nans(len(x))
    out[periods:] = x[periods:] - x[:-periods]
    return out


def change_percent(values: npt.ArrayLike, periods: int = 1) -> FloatArray:
    """Percent change from the value `periods` earlier (NaN where that value is 0)."""
    x = _as_float(values)
    periods = check_period(periods, "periods")
    out = _nans(len(x))
    previous = x[:-periods]
    with np.errstate(invalid="ignore", divide="ignore"):
        out[periods:] = np.where(previous != 0, 100.0 * (x[periods:] - previous) / previous, np.nan)
    return out


def roc(close: npt.ArrayLike, period: int = 10) -> FloatArray:
    """Rate of change: 100*(close - close[period ago]) / close[period ago]."""
    return change_percent(close, period)


# Volatility ----------------------------------------------------------------------------------------------
def bollinger_bands(close: npt.ArrayLike, period: int = 20, std_dev: float = 2.0) -> Bands:
    """Bollinger Bands: SMA(period) plus/minus `std_dev` population standard deviations."""
    x = _as_float(close)
    period = check_period(period)
    middle = sma(x, period)
    deviation = _nans(len(x))
    if len(x) >= period:
        deviation[period - 1 :] = _windows(x, period).std(axis=1)
    return Bands(middle + std_dev * deviation, middle, middle - std_dev * deviation)


def true_range(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike) -> FloatArray:
    """True range: max(high - low, |high - previous close|, |low - previous close|); NaN for the first."""
    h, lo, c = _as_float(high), _as_float(low), _as_float(close)
    out = _nans(len(c))
    if len(c) > 1:
        previous = c[:-1]
        out[1:] = np.maximum(h[1:] - lo[1:], np.maximum(np.abs(h[1:] - previous), np.abs(lo[1:] - previous)))
    return out


def atr(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 14) -> FloatArray:
    """Average true range: Wilder's RMA of the true range (first value at index `period`)."""
    return rma(true_range(high, low, close), check_period(period))


def keltner_channels(
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    *,
    period: int = 20,
    atr_period: int = 10,
    multiplier: float = 2.0,
) -> Bands:
    """Keltner Channels: EMA(close, period) plus/minus `multiplier` * ATR(atr_period)."""
    middle = ema(close, check_period(period))
    width = multiplier * atr(high, low, close, check_period(atr_period, "atr_period"))
    return Bands(middle + width, middle, middle - width)


def donchian_channels(high: npt.ArrayLike, low: npt.ArrayLike, period: int = 20) -> Bands:
    """Donchian Channels: highest high and lowest low of `period` candles, middle their average."""
    upper = highest(high, check_period(period))
    lower = lowest(low, period)
    return Bands(upper, (upper + lower) / 2.0, lower)


# Volume --------------------------------------------------------------------------------------------------
def rolling_sum(values: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Sum of the last `period` values."""
    period = check_period(period)
    return sma(values, period) * period


def obv(close: npt.ArrayLike, volume: npt.ArrayLike) -> FloatArray:
    """On-balance volume: starts at the first volume, adds volume on up closes, subtracts on down closes."""
    c, v = _as_float(close), _as_float(volume)
    if len(c) == 0:
        return _nans(0)
    direction = np.concatenate(([1.0], np.sign(np.diff(c))))
    return np.asarray(np.cumsum(direction * v), dtype=np.float64)


def volume_change(volume: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Percent change of each volume from the average volume of the `period` candles before it."""
    v = _as_float(volume)
    period = check_period(period)
    out = _nans(len(v))
    if len(v) <= period:
        return out
    previous = sma(v, period)[period - 1 : -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out[period:] = np.where(previous > 0, 100.0 * (v[period:] - previous) / previous, np.nan)
    return out


# Trend ---------------------------------------------------------------------------------------------------
def adx(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 14) -> FloatArray:
    """Wilder's ADX: RMA of DX = 100*|+DI - -DI|/(+DI + -DI); first value at index 2*period - 1."""
    h, lo = _as_float(high), _as_float(low)
    period = check_period(period)
    out = _nans(len(h))
    if len(h) < 2 * period:
        return out
    up = np.diff(h)
    down = -np.diff(lo)
    plus_dm = np.where((up > down) & (up > 0), up, 0.0)
    minus_dm = np.where((down > up) & (down > 0), down, 0.0)
    tr = true_range(h, lo, close)[1:]
    # The ratio +DI/-DI is the same for Wilder's running sums and running means, so RMA serves both.
    smoothed_tr = rma(tr, period)
    with np.errstate(invalid="ignore", divide="ignore"):
        plus_di = 100.0 * rma(plus_dm, period) / smoothed_tr
        minus_di = 100.0 * rma(minus_dm, period) / smoothed_tr
        total = plus_di + minus_di
        dx = np.where(total > 0, 100.0 * np.abs(plus_di - minus_di) / total, 0.0)
    dx[np.isnan(smoothed_tr)] = np.nan
    out[1:] = rma(dx, period)
    return out


def aroon(high: npt.ArrayLike, low: npt.ArrayLike, period: int = 25) -> AroonLines:
    """Aroon: 100*(period - candles since the highest high / lowest low) / period over period+1 candles."""
    h, lo = _as_float(high), _as_float(low)
    period = check_period(period)
    up, down = _nans(len(h)), _nans(len(lo))
    if len(h) <= period:
        return AroonLines(up, down)
    # Reversed windows make argmax/argmin pick the most recent extreme, as TA-Lib does.
    since_high = _windows(h, period + 1)[:, ::-1].argmax(axis=1)
    since_low = _windows(lo, period + 1)[:, ::-1].argmin(axis=1)
    up[period:] = 100.0 * (period - since_high) / period
    down[period:] = 100.0 * (period - since_low) / period
    return AroonLines(up, down)
