"""The signal-code helpers: the newest value of the full-series functions, NaN when data is short."""

from __future__ import annotations

import math

import numpy as np
import pytest

from devstack.exchange.data import default_data_dir, load_csv
from worker.indicators import helpers, series
from worker.market.klines import Klines


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
