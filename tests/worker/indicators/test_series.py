"""Full-series indicators against published values and a loop-by-loop reference on real BTCUSDT candles."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from devstack.exchange.data import default_data_dir
from tests.worker.indicators import reference
from worker.indicators import series

# StockCharts' RSI worksheet (Wilder's method, 14 periods) and its published RSI values; the worksheet rounds
# its average gain/loss to two decimals, so exact arithmetic lands within 0.1 (first value 70.4641).
WILDER_CLOSES = [
    44.34, 44.09, 44.15, 43.61, 44.33, 44.83, 45.10, 45.42, 45.84, 46.08, 45.89, 46.03, 45.61, 46.28, 46.28,
    46.00, 46.03, 46.41, 46.22, 45.64, 46.21, 46.25, 45.71, 46.45, 45.78, 45.35, 44.03, 44.18, 44.22, 44.57,
    43.42, 42.66, 43.13,
]  # fmt: skip
WILDER_RSI = [
    70.53, 66.32, 66.55, 69.41, 66.36, 57.97, 62.93, 63.26, 56.06, 62.38, 54.71, 50.42, 39.99, 41.46, 41.87,
    45.46, 37.30, 33.08, 37.77,
]  # fmt: skip


def _load_candles(path: Path, rows: int) -> dict[str, np.ndarray]:
    with path.open() as handle:
        reader = csv.DictReader(handle)
        records = [next(reader) for _ in range(rows)]
    return {
        field: np.array([float(record[column]) for record in records])
        for field, column in (
            ("open_time", "open_time_ms"), ("open", "open"), ("high", "high"), ("low", "low"),
            ("close", "close"), ("volume", "volume"),
        )
    }  # fmt: skip


@pytest.fixture(scope="module")
def btc() -> dict[str, np.ndarray]:
    return _load_candles(default_data_dir() / "BTCUSDT-1h.csv", 600)


def assert_matches(actual: np.ndarray, expected: list[float], rel: float = 1e-9) -> None:
    assert len(actual) == len(expected)
    expected_array = np.array(expected, dtype=np.float64)
    assert np.array_equal(np.isnan(actual), np.isnan(expected_array)), "warm-up NaNs differ"
    finite = ~np.isnan(expected_array)
    np.testing.assert_allclose(actual[finite], expected_array[finite], rtol=rel, atol=1e-9)


def test_rsi_matches_wilders_published_worksheet() -> None:
    values = series.rsi(WILDER_CLOSES, 14)

    assert np.isnan(values[:14]).all()
    np.testing.assert_allclose(values[14:], WILDER_RSI, atol=0.1)
    assert values[14] == pytest.approx(70.4641, abs=1e-4)
    assert_matches(values, reference.rsi(WILDER_CLOSES, 14))


def test_sma_ema_wma_known_values() -> None:
    closes = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]

    assert_matches(series.sma(closes, 3), [math.nan, math.nan, 2.0, 3.0, 4.0, 5.0])
    # EMA(3): seed SMA(1,2,3)=2, alpha 0.5: 3, 4, 5.
    assert_matches(series.ema(closes, 3), [math.nan, math.nan, 2.0, 3.0, 4.0, 5.0])
    # WMA(3) at 3: (1*1 + 2*2 + 3*3)/6.
    assert_matches(series.wma(closes, 3), [math.nan, math.nan, 14 / 6, 20 / 6, 26 / 6, 32 / 6])


@pytest.mark.parametrize("period", [2, 9, 12, 26, 200])
def test_ema_matches_reference_on_real_closes(btc: dict[str, np.ndarray], period: int) -> None:
    assert_matches(series.ema(btc["close"], period), reference.ema(list(btc["close"]), period))


def test_long_ema_stays_exact_across_blocks() -> None:
    closes = np.random.default_rng(7).normal(50_000, 500, 20_000)

    assert_matches(series.ema(closes, 2), reference.ema(list(closes), 2), rel=1e-10)
    assert_matches(series.rma(closes, 50), reference.ema(list(closes), 50, alpha=1 / 50), rel=1e-10)


@pytest.mark.parametrize("period", [2, 14, 30])
def test_rsi_matches_reference_on_real_closes(btc: dict[str, np.ndarray], period: int) -> None:
    assert_matches(series.rsi(btc["close"], period), reference.rsi(list(btc["close"]), period))


def test_macd_is_ema_difference_with_signal_ema(btc: dict[str, np.ndarray]) -> None:
    closes = list(btc["close"])
    line = [f - s for f, s in zip(reference.ema(closes, 12), reference.ema(closes, 26), strict=True)]
    signal = reference.ema(line, 9)

    lines = series.macd(btc["close"])

    assert_matches(lines.macd, line)
    assert_matches(lines.signal, signal)
    assert np.isnan(lines.signal[: 25 + 8]).all() and not np.isnan(lines.signal[33])
    assert_matches(lines.histogram, [m - s for m, s in zip(line, signal, strict=True)])


def test_atr_and_adx_match_wilder_reference(btc: dict[str, np.ndarray]) -> None:
    high, low, close = (list(btc[field]) for field in ("high", "low", "close"))

    assert_matches(series.atr(btc["high"], btc["low"], btc["close"], 14), reference.atr(high, low, close, 14))
    adx = series.adx(btc["high"], btc["low"], btc["close"], 14)
    assert_matches(adx, reference.adx(high, low, close, 14), rel=1e-8)
    assert np.isnan(adx[:27]).all() and not np.isnan(adx[27])


def test_bollinger_uses_population_standard_deviation(btc: dict[str, np.ndarray]) -> None:
    bands = series.bollinger_bands(btc["close"], 20, 2.0)

    deviation = reference.stdev(list(btc["close"]), 20)
    middle = reference.sma(list(btc["close"]), 20)
    assert_matches(bands.middle, middle, rel=1e-10)
    assert_matches(bands.upper, [m + 2 * d for m, d in zip(middle, deviation, strict=True)], rel=1e-10)
    assert_matches(bands.lower, [m - 2 * d for m, d in zip(middle, deviation, strict=True)], rel=1e-10)


def test_cci_aroon_obv_match_reference(btc: dict[str, np.ndarray]) -> None:
    high, low, close, volume = (list(btc[field]) for field in ("high", "low", "close", "volume"))

    assert_matches(series.cci(btc["high"], btc["low"], btc["close"], 20), reference.cci(high, low, close, 20))
    up, down = reference.aroon(high, low, 25)
    lines = series.aroon(btc["high"], btc["low"], 25)
    assert_matches(lines.up, up)
    assert_matches(lines.down, down)
    assert_matches(series.obv(btc["close"], btc["volume"]), reference.obv(close, volume), rel=1e-12)


def test_channels_and_oscillators_known_values() -> None:
    high = [10.0, 12.0, 11.0, 13.0]
    low = [8.0, 9.0, 7.0, 10.0]
    close = [9.0, 11.0, 8.0, 12.0]

    donchian = series.donchian_channels(high, low, 3)
    assert_matches(donchian.upper, [math.nan, math.nan, 12.0, 13.0])
    assert_matches(donchian.lower, [math.nan, math.nan, 7.0, 7.0])
    assert_matches(donchian.middle, [math.nan, math.nan, 9.5, 10.0])
    stochastic = series.stochastic(high, low, close, 3, 2)
    assert_matches(stochastic.k, [math.nan, math.nan, 20.0, 5 / 6 * 100])
    assert_matches(stochastic.d, [math.nan, math.nan, math.nan, (20.0 + 500 / 6) / 2])
    assert_matches(series.williams_r(high, low, close, 3), [math.nan, math.nan, -80.0, -100 / 6])
    assert_matches(series.roc(close, 2), [math.nan, math.nan, -100 / 9, 100 / 11])


def test_vwap_restarts_each_utc_day() -> None:
    day = series.DAY_MS
    times = [day - 120_000, day - 60_000, day, day + 60_000]
    high, low, close = [3.0, 6.0, 9.0, 12.0], [3.0, 6.0, 9.0, 12.0], [3.0, 6.0, 9.0, 12.0]
    volume = [1.0, 3.0, 0.0, 2.0]

    values = series.vwap(high, low, close, volume, times)

    assert_matches(values, [3.0, (3 + 18) / 4, math.nan, 12.0])


def test_volume_change_compares_with_previous_average() -> None:
    volume = [10.0, 20.0, 30.0, 60.0]

    assert_matches(series.volume_change(volume, 3), [math.nan, math.nan, math.nan, 200.0])


def test_bad_period_is_rejected_with_its_name() -> None:
    with pytest.raises(ValueError, match="period must be a positive integer"):
        series.sma([1.0, 2.0], 0)
    with pytest.raises(ValueError, match="d_period"):
        series.stochastic([1.0], [1.0], [1.0], 3, 2.5)  # type: ignore[arg-type]


def test_a_market_that_has_not_moved_reads_neutral() -> None:
    # TA-Lib answers 0 here (oversold; for %R overbought); we keep the neutral middle.
    closes = [100.0] * 20 + [101.0, 100.5, 100.5]
    flat_then_range = [100.0] * 20 + [102.0, 101.0, 101.0]

    rsi = series.rsi(closes, 14)
    assert_matches(rsi, reference.rsi(closes, 14))
    assert (rsi[14:20] == 50.0).all() and rsi[20] == 100.0
    stochastic = series.stochastic(flat_then_range, closes, closes, 5, 3)
    assert (stochastic.k[4:20] == 50.0).all() and (stochastic.d[6:20] == 50.0).all()
    assert stochastic.k[21] == pytest.approx(100 * (100.5 - 100) / (102 - 100))
    williams = series.williams_r(flat_then_range, closes, closes, 5)
    assert (williams[4:20] == -50.0).all()
    assert williams[21] == pytest.approx(-100 * (102 - 100.5) / (102 - 100))
    assert (series.cci(closes, closes, closes, 5)[4:20] == 0.0).all()
    assert (series.adx(closes, closes, closes, 3)[5:20] == 0.0).all()


def test_falling_from_the_start_is_not_mistaken_for_flat() -> None:
    closes = [10.0 - i * 0.1 for i in range(30)]

    assert_matches(series.rsi(closes, 14), reference.rsi(closes, 14))
    assert (series.rsi(closes, 14)[14:] == 0.0).all()


def test_one_candle_windows_match_the_reference(btc: dict[str, np.ndarray]) -> None:
    high, low, close = btc["high"], btc["low"], btc["close"]
    h, lo, c = list(high), list(low), list(close)

    assert_matches(series.rsi(close, 1), reference.rsi(c, 1))
    assert_matches(series.adx(high, low, close, 1), reference.adx(h, lo, c, 1))
    assert_matches(series.cci(high, low, close, 1), reference.cci(h, lo, c, 1))
    up, down = reference.aroon(h, lo, 1)
    assert_matches(series.aroon(high, low, 1).up, up)
    assert_matches(series.aroon(high, low, 1).down, down)
    bands = series.bollinger_bands(close, 1, 2.0)
    assert_matches(bands.upper, c)
    assert_matches(bands.lower, c)
    assert_matches(series.highest(high, 1), h)
    assert_matches(series.lowest(low, 1), lo)
    assert_matches(series.rolling_sum(close, 1), c)
    assert_matches(series.williams_r(high, low, close, 1), list(-100 * (high - close) / (high - low)))
    assert_matches(series.donchian_channels(high, low, 1).middle, list((high + low) / 2))
    assert_matches(series.macd(close, 1, 1, 1).macd, [0.0] * len(c))


def test_percent_changes_from_nothing_are_nan() -> None:
    assert_matches(series.change_percent([0.0, 1.0, 2.0]), [math.nan, math.nan, 100.0])
    assert_matches(series.volume_change([0.0, 0.0, 0.0, 5.0, 1.0], 3), [math.nan] * 4 + [-40.0])
    # TA-Lib's running sum leaves ~5e-15 over the two zeros after a busy stretch: still nothing before 5.0.
    after_busy = series.volume_change([17.3, 23.1, 0.1, 0.7, 0.0, 0.0, 5.0], 2)
    assert_matches(after_busy[4:], [-100.0, -100.0, math.nan])


def test_periods_beyond_ta_libs_limit_are_rejected() -> None:
    with pytest.raises(ValueError, match="at most 100,000"):
        series.ema([1.0, 2.0], series.MAX_PERIOD + 1)
    assert np.isnan(series.ema([1.0, 2.0], series.MAX_PERIOD)).all()
