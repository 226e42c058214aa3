"""Property tests: bounds and invariances every definition must keep, on generated price series."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from worker.indicators import series

prices = arrays(np.float64, st.integers(2, 300), elements=st.floats(1.0, 1e6, allow_nan=False))
periods = st.integers(1, 50)


def _candles(closes: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return closes + spread, closes - spread * 0.5


@given(prices, periods)
def test_rsi_stays_between_0_and_100(closes: np.ndarray, period: int) -> None:
    values = series.rsi(closes, period)

    finite = values[~np.isnan(values)]
    assert ((finite >= 0) & (finite <= 100)).all()
    assert np.isnan(values[: min(period, len(closes))]).all()


@given(st.floats(0.01, 1e6), st.integers(1, 300), periods)
def test_moving_averages_of_a_constant_are_the_constant(value: float, length: int, period: int) -> None:
    closes = np.full(length, value)

    for average in (series.sma, series.ema, series.wma, series.rma):
        result = average(closes, period)
        np.testing.assert_allclose(result[~np.isnan(result)], value, rtol=1e-12)


@given(prices, periods, st.floats(-1e5, 1e5))
def test_shifting_prices_shifts_sma_and_ema(closes: np.ndarray, period: int, shift: float) -> None:
    for average in (series.sma, series.ema):
        np.testing.assert_allclose(
            average(closes + shift, period), average(closes, period) + shift, rtol=1e-9, atol=1e-6
        )


@given(prices, periods)
def test_sma_lies_within_the_window_range(closes: np.ndarray, period: int) -> None:
    values = series.sma(closes, period)
    top, bottom = series.highest(closes, period), series.lowest(closes, period)

    finite = ~np.isnan(values)
    # Rounding error is relative to the largest value summed, not to the smallest.
    slack = 1e-9 * top[finite]
    assert (values[finite] <= top[finite] + slack).all()
    assert (values[finite] >= bottom[finite] - slack).all()


@given(prices, arrays(np.float64, 300, elements=st.floats(0.0, 100.0)), periods, st.integers(1, 10))
@settings(max_examples=50)
def test_oscillators_stay_in_their_ranges(
    closes: np.ndarray, spread: np.ndarray, period: int, d_period: int
) -> None:
    high, low = _candles(closes, spread[: len(closes)])

    k, d = series.stochastic(high, low, closes, period, d_period)
    williams = series.williams_r(high, low, closes, period)
    up, down = series.aroon(high, low, period)
    adx = series.adx(high, low, closes, period)
    for values, lower, upper in ((k, 0, 100), (d, 0, 100), (williams, -100, 0), (up, 0, 100),
                                 (down, 0, 100), (adx, 0, 100)):  # fmt: skip
        finite = values[~np.isnan(values)]
        assert ((finite >= lower - 1e-9) & (finite <= upper + 1e-9)).all()


@given(prices, arrays(np.float64, 300, elements=st.floats(0.0, 100.0)), periods, st.floats(0.1, 4.0))
@settings(max_examples=50)
def test_bands_are_ordered(closes: np.ndarray, spread: np.ndarray, period: int, width: float) -> None:
    high, low = _candles(closes, spread[: len(closes)])

    for bands in (
        series.bollinger_bands(closes, period, width),
        series.keltner_channels(high, low, closes, period=period, atr_period=period, multiplier=width),
        series.donchian_channels(high, low, period),
    ):
        finite = ~np.isnan(bands.upper)
        assert (bands.upper[finite] >= bands.middle[finite] - 1e-6).all()
        assert (bands.middle[finite] >= bands.lower[finite] - 1e-6).all()


@given(prices, periods)
def test_rolling_extremes_match_a_plain_window_scan(closes: np.ndarray, period: int) -> None:
    top, bottom = series.highest(closes, period), series.lowest(closes, period)

    for index in range(period - 1, len(closes)):
        window = closes[index - period + 1 : index + 1]
        assert top[index] == window.max() and bottom[index] == window.min()
