"""SnapshotSource: runs that start together share a snapshot, and a replaced one gives up its segment."""

from __future__ import annotations

import itertools

from worker.market.store import KlineStore
from worker.market.tickers import TickerStore
from worker.signals.snapshots import SnapshotSource


def _store() -> KlineStore:
    store = KlineStore(capacity=50)
    for symbol in ("AAAUSDT", "BBBUSDT"):
        series = store.series(symbol, "1h")
        for hour in range(50):
            price = 100.0 + hour
            series.upsert(hour * 3_600_000, price, price + 1, price - 1, price, 10.0, closed=True)
    return store


def _source(store: KlineStore, clock: itertools.count[float]) -> SnapshotSource:
    return SnapshotSource(store, TickerStore(), store.keys, monotonic=lambda: float(next(clock)))


async def test_runs_starting_together_share_one_snapshot() -> None:
    source = _source(_store(), itertools.count(10))

    async with source.lease(0.0, []) as first, source.lease(0.0, []) as second:
        assert second is first
    source.close()

    assert first.closed


async def test_a_fresher_snapshot_is_written_into_the_segment_of_the_one_it_replaces() -> None:
    source = _source(_store(), itertools.count(10))

    async with source.lease(0.0, []) as old:
        pass
    async with source.lease(100.0, []) as new:
        # No run held the old one: it was closed first and its segment holds the new candles.
        assert old.closed and not new.closed
        assert new.name == old.name and new.generation > old.generation
    source.close()


async def test_a_snapshot_still_in_use_keeps_its_segment_until_its_run_ends() -> None:
    source = _source(_store(), itertools.count(10))

    async with source.lease(0.0, []) as old:
        async with source.lease(100.0, []) as new:
            assert not old.closed and new.name != old.name
        assert not old.closed  # its run is still going
    assert old.closed
    source.close()
