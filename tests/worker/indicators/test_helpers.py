"""The signal-code helpers: the newest value of the full-series functions, NaN when data is short."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devstack.exchange.data import default_data_dir
from worker.indicators import helpers, series
from worker.market.klines import Klines
from worker.market.recordings import load_csv


@pytest.fixture(scope="module")
def k() -> Klines:
    candles = load_csv(default_data_dir() / "ETHUSDT-1m.csv", 60_000).take(slice(0, 1000))
    return Klines.from_arrays(
        candles.open_time, candles.open, candles.high, candles.low, candles.close, candles.volume_units / 1e8
    )


def test_helpers_return_the_last_value_of_their_series(k: Klines) -> None:
    h, lo, c, v = k.high, k.low, k.close, k.volume
    expected = {
        "get_latest_sma": series.sma(c, 20)[-1],
        "get_latest_ema": series.ema(c, 20)[-1],
        "get_latest_wma": series.wma(c, 20)[-1],
        "get_latest_vwap": series.vwap(h, lo, c, v, k.open_time)[-1],
        "get_latest_rsi": series.rsi(c, 14)[-1],
        "get_latest_cci": series.cci(h, lo, c, 20)[-1],
        "get_latest_williams_r": series.williams_r(h, lo, c, 14)[-1],
        "get_latest_roc": series.roc(c, 10)[-1],
        "get_latest_atr": series.atr(h, lo, c, 14)[-1],
        "get_latest_obv": series.obv(c, v)[-1],
        "get_latest_volume_ma": series.sma(v, 20)[-1],
        "get_latest_volume_change": series.volume_change(v, 20)[-1],
        "get_latest_adx": series.adx(h, lo, c, 14)[-1],
        "get_highest_high": h[-20:].max(),
        "get_lowest_low": lo[-20:].min(),
        "get_price_change": c[-1] - c[-2],
        "get_price_change_percent": (c[-1] - c[-2]) / c[-2] * 100,
        "get_latest_volume": v[-1],
    }
    for name, value in expected.items():
        assert getattr(helpers, name)(k) == pytest.approx(value, rel=1e-9), name


def test_tuple_helpers(k: Klines) -> None:
    macd = series.macd(k.close)
    bands = series.bollinger_bands(k.close, 20, 2.0)
    stochastic = series.stochastic(k.high, k.low, k.close, 14, 3)

    assert helpers.get_latest_macd(k) == pytest.approx((macd.macd[-1], macd.signal[-1], macd.histogram[-1]))
    assert helpers.get_latest_bollinger_bands(k) == pytest.approx(
        (bands.upper[-1], bands.middle[-1], bands.lower[-1])
    )
    assert helpers.get_latest_stochastic(k) == pytest.approx((stochastic.k[-1], stochastic.d[-1]))
    upper, middle, lower = helpers.get_latest_keltner_channels(k)
    assert upper > middle > lower
    up, down = helpers.get_latest_aroon(k)
    assert 0 <= up <= 100 and 0 <= down <= 100
    assert helpers.get_latest_donchian_channels(k, 5)[0] == k.high[-5:].max()


def test_short_series_give_nan_and_getters_are_the_arrays(k: Klines) -> None:
    short = Klines.from_arrays(k.open_time[:5], k.open[:5], k.high[:5], k.low[:5], k.close[:5], k.volume[:5])

    assert math.isnan(helpers.get_latest_rsi(short))
    assert all(math.isnan(value) for value in helpers.get_latest_macd(short))
    assert helpers.get_closes(k) is k.close and np.array_equal(helpers.get_volumes(k), k.volume)
    with pytest.raises(ValueError, match="period must be a positive integer"):
        helpers.get_latest_sma(k, 0)


@dataclass(frozen=True)
class CandleWalk:
    """A random walk of one-hour candles, sometimes with flat stretches (no move, no range), described by
    the few numbers that make it: a failing example prints as these, not as 700 candles."""

    count: int
    seed: int
    volatility: float
    still_share: float | None  # share of candles that stay flat; None: none do
    scale: float

    def klines(self) -> Klines:
        rng = np.random.default_rng(self.seed)
        moves = rng.normal(0, self.volatility, self.count)
        spread = np.abs(rng.normal(0, 0.005, self.count))
        if self.still_share is not None:
            still = rng.random(self.count) < self.still_share
            moves[still] = 0.0
            spread[still] = 0.0
        close = self.scale * np.exp(np.cumsum(moves))
        times = 1_735_700_000_000 + np.arange(self.count) * 3_600_000
        volume = rng.uniform(0, 50, self.count) * (rng.random(self.count) > 0.1)
        return Klines.from_arrays(times, close, close * (1 + spread), close * (1 - spread), close, volume)


candle_walks = st.builds(
    CandleWalk,
    count=st.integers(1, 700),
    seed=st.integers(0, 2**32 - 1),
    volatility=st.sampled_from([0.001, 0.01, 0.05]),
    still_share=st.none() | st.floats(0.2, 1.0),
    scale=st.sampled_from([1e-5, 1.0, 60_000.0]),
)


@given(candle_walks, st.integers(1, 40), st.integers(1, 12))
@settings(max_examples=300, deadline=None)
def test_helpers_match_their_series_on_random_candles(walk: CandleWalk, period: int, short: int) -> None:
    k = walk.klines()
    h, lo, c, v = k.high, k.low, k.close, k.volume
    price = float(np.abs(c).max())
    macd = series.macd(c, short, short + period, 9)
    keltner = series.keltner_channels(h, lo, c, period=period, atr_period=short)
    cases = {
        "get_latest_rsi": (helpers.get_latest_rsi(k, period), series.rsi(c, period)[-1]),
        "get_latest_adx": (helpers.get_latest_adx(k, period), series.adx(h, lo, c, period)[-1]),
        "get_latest_atr": (helpers.get_latest_atr(k, period), series.atr(h, lo, c, period)[-1]),
        "get_latest_ema": (helpers.get_latest_ema(k, period), series.ema(c, period)[-1]),
        "get_latest_sma": (helpers.get_latest_sma(k, period), series.sma(c, period)[-1]),
        "get_latest_wma": (helpers.get_latest_wma(k, period), series.wma(c, period)[-1]),
        "get_latest_cci": (helpers.get_latest_cci(k, period), series.cci(h, lo, c, period)[-1]),
        "get_latest_williams_r": (helpers.get_latest_williams_r(k, period),
                                  series.williams_r(h, lo, c, period)[-1]),
        "get_latest_roc": (helpers.get_latest_roc(k, period), series.roc(c, period)[-1]),
        "get_price_change": (helpers.get_price_change(k, period), series.change(c, period)[-1]),
        "get_latest_vwap": (helpers.get_latest_vwap(k), series.vwap(h, lo, c, v, k.open_time)[-1]),
        "get_latest_obv": (helpers.get_latest_obv(k), series.obv(c, v)[-1]),
        "get_latest_volume": (helpers.get_latest_volume(k, period), series.rolling_sum(v, period)[-1]),
        "get_latest_volume_change": (helpers.get_latest_volume_change(k, period),
                                     series.volume_change(v, period)[-1]),
        "get_latest_macd": (helpers.get_latest_macd(k, short, short + period, 9),
                            (macd.macd[-1], macd.signal[-1], macd.histogram[-1])),
        "get_latest_stochastic": (helpers.get_latest_stochastic(k, period, short),
                                  tuple(line[-1] for line in series.stochastic(h, lo, c, period, short))),
        "get_latest_bollinger_bands": (helpers.get_latest_bollinger_bands(k, period, 1.5),
                                       tuple(band[-1] for band in series.bollinger_bands(c, period, 1.5))),
        "get_latest_keltner_channels": (helpers.get_latest_keltner_channels(k, period, short, 2.0),
                                        tuple(band[-1] for band in keltner)),
        "get_latest_donchian_channels": (helpers.get_latest_donchian_channels(k, period),
                                         tuple(band[-1] for band in series.donchian_channels(h, lo, period))),
        "get_latest_aroon": (helpers.get_latest_aroon(k, period),
                             tuple(line[-1] for line in series.aroon(h, lo, period))),
    }  # fmt: skip
    for name, (actual, expected) in cases.items():
        # MACD is a difference of prices: its rounding is relative to the price, not to itself.
        tolerance = 1e-12 * price if name == "get_latest_macd" else 1e-9
        np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=tolerance, err_msg=name)
