"""Full-series technical indicators on TA-Lib: float64 arrays, NaN during each indicator's warm-up.

TA-Lib (the C library, through the `talib` binding) computes every kernel it has. The definitions are the
ones traders compare against (TradingView, pandas-ta, Wilder's and Appel's worksheets): EMAs seeded with the
SMA of their first `period` values, Wilder's smoothing for RSI/ATR/ADX, Bollinger Bands on the population
standard deviation. Where TA-Lib's own function answers differently, the function here says so and why:
- MACD and ADX are built from TA-Lib's EMA / Wilder pieces, because TA-Lib's MACD and ADX seed their
  averages later than the textbook (the values agree only after a few hundred candles);
- a market that has not moved reads neutral (RSI 50, stochastic 50, Williams %R -50), where TA-Lib says 0,
  which a strategy would read as oversold (or, for %R, overbought);
- a window of one candle is allowed (TA-Lib refuses it for most indicators; the result is trivial).
numpy is left only where TA-Lib has no equivalent: VWAP anchored to the UTC day, and those small fixes.
Leading NaNs in an input (e.g. the MACD line fed to its signal EMA) are skipped. A NaN inside the data is
not supported: TA-Lib's running sums carry it forward (the kline store never holds one).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import talib

FloatArray = npt.NDArray[np.float64]

DAY_MS = 86_400_000
MAX_PERIOD = 100_000  # TA-Lib's limit for every period parameter


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
    """Return `period` as an int, or raise ValueError naming the parameter unless it is 1..MAX_PERIOD."""
    if type(period) is int and 0 < period <= MAX_PERIOD:
        return period
    if isinstance(period, bool) or not isinstance(period, int | np.integer) or not 1 <= period <= MAX_PERIOD:
        raise ValueError(f"{name} must be a positive integer (at most {MAX_PERIOD:,}), got {period!r}")
    return int(period)


def _nans(length: int) -> FloatArray:
    return np.full(length, np.nan, dtype=np.float64)


def _first_finite(values: FloatArray) -> int:
    """Index of the first non-NaN value (len(values) if there is none)."""
    if len(values) and values[0] == values[0]:
        return 0
    finite = ~np.isnan(values)
    return int(finite.argmax()) if finite.any() else len(values)


# Moving averages -----------------------------------------------------------------------------------------
def sma(values: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Simple moving average: the mean of the last `period` values."""
    return talib.SMA(_as_float(values), check_period(period))


def ema(values: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Exponential moving average, alpha = 2/(period+1), seeded with the SMA of the first `period` values."""
    return talib.EMA(_as_float(values), check_period(period))


def rma(values: npt.ArrayLike, period: int = 14) -> FloatArray:
    """Wilder's moving average (RMA/SMMA), alpha = 1/period, seeded with the SMA of the first `period`."""
    return talib.RMA(_as_float(values), check_period(period))


def wma(values: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Linearly weighted moving average: weights 1..period, the newest value weighing most."""
    return talib.WMA(_as_float(values), check_period(period))


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
    # numpy: TA-Lib's VWAP runs from the first candle on, with no session anchor.
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
    if period == 1:  # TA-Lib needs two; one candle's RSI is all gain (100), all loss (0) or no move (50)
        out = _nans(len(x))
        out[1:] = 50.0 + 50.0 * np.sign(np.diff(x))
        return out
    out = talib.RSI(x, period)
    # Both averages stay zero while the price has not moved since the first close: TA-Lib answers 0
    # (oversold), we answer neutral.
    start = _first_finite(x)
    first = start + period
    if first < len(x) and out[first] == 0.0:
        moved = np.flatnonzero(x[start:] != x[start])
        end = start + int(moved[0]) if len(moved) else len(x)
        out[first:end] = 50.0
    return out


def macd(close: npt.ArrayLike, fast: int = 12, slow: int = 26, signal: int = 9) -> MacdLines:
    """MACD = EMA(fast) - EMA(slow); signal = EMA(signal) of MACD; histogram = MACD - signal."""
    # Built from TA-Lib's EMA: talib.MACD seeds the fast EMA at the slow one's first value (not at the
    # fast one's own), so its early values differ from Appel's definition, and it swaps fast > slow.
    x = _as_float(close)
    line = talib.EMA(x, check_period(fast, "fast")) - talib.EMA(x, check_period(slow, "slow"))
    signal_line = talib.EMA(line, check_period(signal, "signal"))
    return MacdLines(line, signal_line, line - signal_line)


def highest(values: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Highest value of the last `period` values (the current one included)."""
    x, period = _as_float(values), check_period(period)
    return x.copy() if period == 1 else talib.MAX(x, period)


def lowest(values: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Lowest value of the last `period` values (the current one included)."""
    x, period = _as_float(values), check_period(period)
    return x.copy() if period == 1 else talib.MIN(x, period)


def _neutral_where_flat(values: FloatArray, top: FloatArray, bottom: FloatArray, neutral: float) -> None:
    """Set `neutral` where TA-Lib answered 0 because the window had no range (top == bottom)."""
    zero = np.flatnonzero(values == 0.0)
    if len(zero):
        values[zero[top[zero] == bottom[zero]]] = neutral


def stochastic(
    high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, k_period: int = 14, d_period: int = 3
) -> StochasticLines:
    """Fast stochastic: %K = 100*(close - lowest low)/(highest high - lowest low), %D = SMA(%K, d_period).

    %K is 50 when the range is zero.
    """
    h, lo, c = _as_float(high), _as_float(low), _as_float(close)
    k_period = check_period(k_period, "k_period")
    d_period = check_period(d_period, "d_period")
    # %D apart: talib.STOCHF starts %K only where %D starts.
    k, _ = talib.STOCHF(h, lo, c, k_period, 1)
    _neutral_where_flat(k, highest(h, k_period), lowest(lo, k_period), 50.0)
    return StochasticLines(k, talib.SMA(k, d_period))


def cci(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Commodity Channel Index: (tp - SMA(tp)) / (0.015 * mean absolute deviation), tp = (h+l+c)/3."""
    h, lo, c = _as_float(high), _as_float(low), _as_float(close)
    period = check_period(period)
    if period == 1:  # TA-Lib needs two; a one-candle window has no deviation, so CCI is 0
        return (h + lo + c) * 0.0
    return talib.CCI(h, lo, c, period)


def williams_r(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 14) -> FloatArray:
    """Williams %R: -100*(highest high - close)/(highest high - lowest low); -50 when the range is zero."""
    h, lo, c = _as_float(high), _as_float(low), _as_float(close)
    period = check_period(period)
    if period == 1:  # TA-Lib needs two; one candle's own range
        span = h - lo
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(span > 0, -100.0 * (h - c) / span, -50.0)
        out[np.isnan(span)] = np.nan
        return np.asarray(out, dtype=np.float64)
    out = talib.WILLR(h, lo, c, period)
    _neutral_where_flat(out, talib.MAX(h, period), talib.MIN(lo, period), -50.0)
    return out


def change(values: npt.ArrayLike, periods: int = 1) -> FloatArray:
    """Difference between each value and the one `periods` earlier."""
    return talib.MOM(_as_float(values), check_period(periods, "periods"))


def change_percent(values: npt.ArrayLike, periods: int = 1) -> FloatArray:
    """Percent change from the value `periods` earlier (NaN where that value is 0)."""
    x = _as_float(values)
    periods = check_period(periods, "periods")
    out = talib.ROC(x, periods)
    # TA-Lib answers 0 for a change from 0; no percentage describes it.
    out[periods:][x[:-periods] == 0.0] = np.nan
    return out


def roc(close: npt.ArrayLike, period: int = 10) -> FloatArray:
    """Rate of change: 100*(close - close[period ago]) / close[period ago]."""
    return change_percent(close, period)


# Volatility ----------------------------------------------------------------------------------------------
def bollinger_bands(close: npt.ArrayLike, period: int = 20, std_dev: float = 2.0) -> Bands:
    """Bollinger Bands: SMA(period) plus/minus `std_dev` population standard deviations."""
    x = _as_float(close)
    period = check_period(period)
    if period == 1:  # TA-Lib needs two; one value has no deviation
        return Bands(x.copy(), x.copy(), x.copy())
    upper, middle, lower = talib.BBANDS(x, period, std_dev, std_dev)
    return Bands(upper, middle, lower)


def true_range(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike) -> FloatArray:
    """True range: max(high - low, |high - previous close|, |low - previous close|); NaN for the first."""
    return talib.TRANGE(_as_float(high), _as_float(low), _as_float(close))


def atr(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 14) -> FloatArray:
    """Average true range: Wilder's RMA of the true range (first value at index `period`)."""
    return talib.ATR(_as_float(high), _as_float(low), _as_float(close), check_period(period))


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
    # From TA-Lib's EMA and ATR: talib.KC starts both where the longer one starts, so its early values
    # differ (and the two calls are no slower than talib.KC).
    middle = ema(close, period)
    width = multiplier * atr(high, low, close, check_period(atr_period, "atr_period"))
    return Bands(middle + width, middle, middle - width)


def donchian_channels(high: npt.ArrayLike, low: npt.ArrayLike, period: int = 20) -> Bands:
    """Donchian Channels: highest high and lowest low of `period` candles, middle their average."""
    h, lo = _as_float(high), _as_float(low)
    period = check_period(period)
    if period == 1:  # TA-Lib needs two; each candle's own high and low
        return Bands(h.copy(), (h + lo) / 2.0, lo.copy())
    upper, middle, lower = talib.DONCHIAN(h, lo, period)
    return Bands(upper, middle, lower)


# Volume --------------------------------------------------------------------------------------------------
def rolling_sum(values: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Sum of the last `period` values."""
    x, period = _as_float(values), check_period(period)
    return x.copy() if period == 1 else talib.SUM(x, period)


def obv(close: npt.ArrayLike, volume: npt.ArrayLike) -> FloatArray:
    """On-balance volume: starts at the first volume, adds volume on up closes, subtracts on down closes."""
    return talib.OBV(_as_float(close), _as_float(volume))


def volume_change(volume: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Percent change of each volume from the average volume of the `period` candles before it."""
    v, period = _as_float(volume), check_period(period)
    relative = talib.RVOL(v, period)
    # No volume in the window before a candle: no percentage describes its change. Test the window itself:
    # TA-Lib keeps a running sum, so after a busy stretch a window of zeros sums to a rounding residue
    # (~1e-15), not 0, and the ratio over it is huge instead of infinite.
    nothing_before = np.zeros(len(v), dtype=bool)
    nothing_before[1:] = highest(np.abs(v), period)[:-1] == 0.0
    relative[nothing_before | np.isinf(relative)] = np.nan
    return 100.0 * (relative - 1.0)


# Trend ---------------------------------------------------------------------------------------------------
def adx(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 14) -> FloatArray:
    """Wilder's ADX: RMA of DX = 100*|+DI - -DI|/(+DI + -DI); first value at index 2*period - 1.

    `close` does not change the result: the true range divides both DIs, so it cancels out of DX.
    """
    # Wilder's RMA of each directional movement, seeded with its first `period` values as his worksheet
    # does. talib.ADX (and PLUS_DI/MINUS_DI) seed with `period - 1` values plus one smoothing step, which
    # moves ADX by a few percent for the first ~30 periods.
    h, lo = _as_float(high), _as_float(low)
    if len(_as_float(close)) != len(h):
        raise ValueError("high, low and close must have the same length")
    period = check_period(period)
    plus = talib.RMA(talib.PLUS_DM(h, lo, 1), period)
    minus = talib.RMA(talib.MINUS_DM(h, lo, 1), period)
    total = plus + minus
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = np.where(total > 0, 100.0 * np.abs(plus - minus) / total, 0.0)
    dx[np.isnan(total)] = np.nan
    return talib.RMA(dx, period)


def aroon(high: npt.ArrayLike, low: npt.ArrayLike, period: int = 25) -> AroonLines:
    """Aroon: 100*(period - candles since the highest high / lowest low) / period over period+1 candles."""
    h, lo = _as_float(high), _as_float(low)
    period = check_period(period)
    if period == 1:  # TA-Lib needs two; over two candles, 100 if the newer one holds the extreme, else 0
        up, down = _nans(len(h)), _nans(len(lo))
        up[1:] = np.where(h[1:] >= h[:-1], 100.0, 0.0)
        down[1:] = np.where(lo[1:] <= lo[:-1], 100.0, 0.0)
        return AroonLines(up, down)
    down, up = talib.AROON(h, lo, period)
    return AroonLines(up, down)
