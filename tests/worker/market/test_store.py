"""The kline store: in-place updates, appends, gaps, corrections, views without copies, shared buffers."""

from __future__ import annotations

from multiprocessing import shared_memory

import pytest

from worker.market.store import KlineSeries, KlineStore, Upsert, series_nbytes

MINUTE = 60_000
T0 = 1_735_873_200_000


def candle(series: KlineSeries, index: int, *, closed: bool = True, close: float | None = None) -> Upsert:
    price = close if close is not None else 100.0 + index
    return series.upsert(T0 + index * MINUTE, price, price + 1, price - 1, price, 10.0, closed=closed)


def test_forming_candle_updates_in_place_then_closes() -> None:
    series = KlineSeries("BTCUSDT", "1m", capacity=5)

    results = [
        candle(series, 0, closed=False, close=100.0),
        candle(series, 0, closed=False, close=101.0),
        candle(series, 0, closed=True, close=102.0),
        candle(series, 1, closed=False),
    ]

    assert results == [Upsert.APPENDED, Upsert.UPDATED, Upsert.UPDATED, Upsert.APPENDED]
    klines = series.klines()
    assert list(klines.open_time) == [T0, T0 + MINUTE]
    assert list(klines.close) == [102.0, 101.0]
    assert not klines.closed and not series.last_closed
    assert series.version == 4 and series.changed_at_ms > 0


def test_full_buffer_drops_the_oldest_candle() -> None:
    series = KlineSeries("BTCUSDT", "1m", capacity=3)

    for index in range(5):
        candle(series, index)

    assert list(series.klines().open_time) == [T0 + 2 * MINUTE, T0 + 3 * MINUTE, T0 + 4 * MINUTE]
    assert list(series.klines().close) == [102.0, 103.0, 104.0]


def test_gap_unconfirmed_and_stale_updates_are_reported() -> None:
    series = KlineSeries("BTCUSDT", "1m", capacity=10)
    candle(series, 0)
    candle(series, 1, closed=False)

    unconfirmed = candle(series, 2, closed=False)  # candle 1 never arrived closed
    gap = candle(series, 5, closed=False)
    stale_older = candle(series, 3, closed=False)
    candle(series, 5, closed=True)
    stale_reopen = candle(series, 5, closed=False)

    assert (unconfirmed, gap, stale_older, stale_reopen) == (Upsert.UNCONFIRMED, Upsert.GAP, Upsert.STALE,
                                                             Upsert.STALE)  # fmt: skip
    assert series.last_closed


def test_backfilled_candles_are_inserted_and_corrected_in_order() -> None:
    series = KlineSeries("BTCUSDT", "1m", capacity=4)
    candle(series, 0)
    candle(series, 3)

    inserted = [candle(series, 2), candle(series, 1)]
    corrected = candle(series, 1, close=55.0)
    candle(series, 4)
    too_old = candle(series, 0)

    assert inserted == [Upsert.INSERTED, Upsert.INSERTED] and corrected == Upsert.REPLACED
    assert list(series.klines().open_time) == [T0 + i * MINUTE for i in range(1, 5)]
    assert series.klines().close[0] == 55.0
    assert too_old == Upsert.STALE


def test_views_are_read_only_and_share_memory_with_the_store() -> None:
    series = KlineSeries("BTCUSDT", "1m", capacity=3)
    candle(series, 0, closed=False, close=100.0)
    view = series.klines()

    candle(series, 0, closed=False, close=150.0)

    assert view.close[0] == 150.0  # a view, not a copy
    with pytest.raises(ValueError, match="read-only"):
        view.close[0] = 1.0


def test_series_in_shared_memory_is_visible_to_a_second_mapping() -> None:
    block = shared_memory.SharedMemory(create=True, size=series_nbytes(10))
    try:
        writer = KlineSeries("ETHUSDT", "5m", capacity=10, buffer=block.buf)
        other = shared_memory.SharedMemory(name=block.name)
        try:
            reader = KlineSeries("ETHUSDT", "5m", capacity=10, buffer=other.buf)
            writer.upsert(T0, 1.0, 2.0, 0.5, 1.5, 7.0, closed=True)
            seen = reader.klines()
            assert list(seen.open_time) == [T0] and list(seen.volume) == [7.0] and seen.closed
            del seen, reader
        finally:
            other.close()
        del writer
    finally:
        block.close()
        block.unlink()


def test_store_uses_the_allocator_and_bounds_memory() -> None:
    sizes: list[int] = []

    def allocate(nbytes: int) -> bytearray:
        sizes.append(nbytes)
        return bytearray(nbytes)

    store = KlineStore(capacity=1000, allocate=allocate)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        for interval in ("1m", "5m", "1h"):
            store.series(symbol, interval)
    store.series("BTCUSDT", "1m")

    assert sizes == [series_nbytes(1000)] * 6 == [48_032] * 6
    assert len(store) == 6 and store.klines("BTCUSDT", "4h") is None
    with pytest.raises(ValueError, match="unknown interval"):
        store.series("BTCUSDT", "7m")
