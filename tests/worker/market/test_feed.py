"""The market feed against the exchange simulator, with sockets dropped, streams stalled and 429s."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from devstack.exchange.server import ExchangeSimulator
from tests.worker.market.conftest import START_MS
from worker.errors import ConfigError
from worker.market.feed import FeedSettings, MarketFeed
from worker.market.rest import BinanceKlineSource
from worker.market.store import KlineStore
from worker.market.tickers import TickerStore
from worker.retry import Backoff

SERIES = {("BTCUSDT", "1m"), ("BTCUSDT", "5m"), ("BTCUSDT", "1h"), ("ETHUSDT", "1m")}
HOUR_MS = 3_600_000


def settings(ws_url: str, **overrides: object) -> FeedSettings:
    values: dict[str, object] = {
        "ws_base_url": ws_url,
        "stale_after_secs": 2.0,
        "stream_stale_after_secs": 3.0,
        "backoff": Backoff(base_secs=0.05, max_secs=0.5),
    }
    values.update(overrides)
    return FeedSettings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(feed: MarketFeed) -> AsyncIterator[MarketFeed]:
    task = asyncio.create_task(feed.run())
    try:
        yield feed
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_for(condition: Callable[[], bool], timeout_secs: float, what: str) -> None:
    deadline = time.monotonic() + timeout_secs
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def assert_store_matches_recording(store: KlineStore, sim: ExchangeSimulator, key: tuple[str, str]) -> None:
    series = store.get(*key)
    assert series is not None and len(series) > 0, key
    klines = series.klines()
    closed = len(klines) - (0 if klines.closed else 1)
    interval_ms = {"1m": 60_000, "5m": 300_000, "1h": HOUR_MS}[key[1]]
    recorded = sim.markets[key[0]].series(interval_ms)
    first, last = int(klines.open_time[0]), int(klines.open_time[closed - 1])
    rows = (recorded.open_time >= first) & (recorded.open_time <= last)
    # Every recorded candle in the store's window is there (no gap), with the recorded values.
    missing = sorted(set(recorded.open_time[rows].tolist()) - set(klines.open_time[:closed].tolist()))
    assert not missing, f"{key}: missing candles {missing} (store ends at {last}, closed={klines.closed})"
    np.testing.assert_array_equal(klines.open_time[:closed], recorded.open_time[rows], err_msg=str(key))
    for name, expected in (("open", recorded.open), ("high", recorded.high), ("low", recorded.low),
                           ("close", recorded.close)):  # fmt: skip
        np.testing.assert_array_equal(getattr(klines, name)[:closed], expected[rows], err_msg=f"{key} {name}")
    np.testing.assert_allclose(klines.volume[:closed], recorded.volume_units[rows] / 1e8, rtol=1e-12)


async def test_feed_keeps_every_candle_through_an_hour_of_faults(fast_simulator: ExchangeSimulator) -> None:
    sim = fast_simulator
    store, tickers = KlineStore(), TickerStore()
    source = BinanceKlineSource(sim.url)
    feed = MarketFeed(settings(sim.ws_url), store, tickers, source)
    feed.set_subscriptions(SERIES, {"BTCUSDT"})
    try:
        async with running(feed):
            await wait_for(lambda: all(store.get(*k) and len(store.get(*k) or ()) > 40 for k in SERIES), 20,
                           "the initial backfill")  # fmt: skip
            sim.faults.update({"drop_every_secs": 3})
            await asyncio.sleep(8)
            sim.faults.update({"stall_streams": ["btcusdt@kline_1m"]})
            await asyncio.sleep(5)
            sim.faults.update({"stall_streams": [], "reject_status": 429, "reject_count": 6})
            sim.hub.drop_all(abort=True)
            await wait_for(lambda: sim.clock.now_ms() >= START_MS + HOUR_MS, 40, "an hour of market time")
            sim.faults.update({"drop_every_secs": None})
            await wait_for(lambda: feed.health().connected and feed.health().pending_backfills == 0, 10,
                           "the feed to settle")  # fmt: skip
            await asyncio.sleep(1.5)
            health = feed.health()
            for key in sorted(SERIES):
                assert_store_matches_recording(store, sim, key)
    finally:
        await source.close()
    assert health.reconnects >= 5 and not health.stale and health.malformed_messages == 0
    newest = store.get("BTCUSDT", "1m")
    assert newest is not None and newest.last_open_time is not None
    assert newest.last_open_time >= START_MS + HOUR_MS - 120_000
    assert len(newest) == 1000
    ticker = tickers.get("BTCUSDT")
    assert ticker is not None and ticker.event_time_ms > START_MS + HOUR_MS / 2


async def test_new_series_get_their_history_even_when_the_stream_comes_first(
    fast_simulator: ExchangeSimulator,
) -> None:
    sim = fast_simulator
    # One slow backfill at a time: every series' stream delivers candles before its backfill runs.
    sim.faults.update({"delay_ms": 400})
    store, tickers = KlineStore(capacity=200), TickerStore()
    source = BinanceKlineSource(sim.url)
    feed = MarketFeed(
        settings(sim.ws_url, backfill_concurrency=1, backfill_limit=200), store, tickers, source
    )
    feed.set_subscriptions(SERIES, set())
    try:
        async with running(feed):
            await wait_for(
                lambda: all(len(store.get(*key) or ()) > 0 for key in SERIES), 10, "streamed candles"
            )
            streamed_first = {key: len(store.get(*key) or ()) for key in SERIES}
            await wait_for(lambda: feed.health().pending_backfills == 0, 20, "the backfills")
            await asyncio.sleep(0.5)
    finally:
        await source.close()
    assert min(streamed_first.values()) < 10, "the streams came first"
    for key in sorted(SERIES):
        assert_store_matches_recording(store, sim, key)
    # 1h: two days of recording before the start; the finer ones have more than the store keeps.
    short = [key for key in SERIES if len(store.get(*key) or ()) < (48 if key[1] == "1h" else 200)]
    assert short == []


async def test_streams_split_over_connections_and_change_live(fast_simulator: ExchangeSimulator) -> None:
    sim = fast_simulator
    store, tickers = KlineStore(capacity=50), TickerStore()
    source = BinanceKlineSource(sim.url)
    feed = MarketFeed(settings(sim.ws_url, max_streams_per_connection=3, stream_stale_after_secs=None,
                               backfill_limit=50), store, tickers, source)  # fmt: skip
    feed.set_subscriptions({("BTCUSDT", "1m"), ("BTCUSDT", "5m"), ("ETHUSDT", "1m")}, {"BTCUSDT", "ETHUSDT"})
    try:
        async with running(feed):
            await wait_for(lambda: feed.health().open_connections == 2 and len(sim.hub.connections) == 2, 10,
                           "two connections")  # fmt: skip
            feed.set_subscriptions({("BTCUSDT", "1m"), ("ETHUSDT", "15m")}, {"ETHUSDT"})
            await wait_for(
                lambda: (
                    sorted(s for c in sim.hub.connections for s in c.streams)
                    == ["btcusdt@kline_1m", "ethusdt@kline_15m", "ethusdt@ticker"]
                ),
                10,
                "the simulator to see the new subscriptions",
            )
            await wait_for(lambda: len(store.get("ETHUSDT", "15m") or ()) > 0, 10, "the new series' backfill")
            health = feed.health()
    finally:
        await source.close()
    assert store.get("BTCUSDT", "5m") is None and tickers.get("BTCUSDT") is None
    assert health.streams == 3 and health.connections == 2


async def test_malformed_messages_are_skipped_and_counted(fast_simulator: ExchangeSimulator) -> None:
    valid = {"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": START_MS + 1, "s": "BTCUSDT", "k": {
        "t": START_MS, "T": START_MS + 59_999, "s": "BTCUSDT", "i": "1m", "o": "1.5", "h": "2", "l": "1",
        "c": "1.75", "v": "3", "x": False}}}  # fmt: skip

    async def junk_then_valid(connection: ServerConnection) -> None:
        for message in ("not json", "[1, 2]", json.dumps({"stream": "x", "data": {"e": "kline", "k": {}}})):
            await connection.send(message)
        await connection.send(json.dumps(valid))
        await connection.wait_closed()

    store, tickers = KlineStore(), TickerStore()
    source = BinanceKlineSource(fast_simulator.url)
    async with serve(junk_then_valid, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        feed = MarketFeed(settings(f"ws://127.0.0.1:{port}", stale_after_secs=30.0), store, tickers, source)
        feed.set_subscriptions({("BTCUSDT", "1m")}, set())
        try:
            async with running(feed):
                await wait_for(lambda: feed.health().malformed_messages == 3, 10, "three malformed messages")
                await wait_for(
                    lambda: (store.get("BTCUSDT", "1m") or None) is not None, 10, "the valid kline"
                )
        finally:
            await source.close()
    series = store.get("BTCUSDT", "1m")
    assert series is not None and START_MS in series.klines().open_time.tolist()


async def test_silent_feed_reports_stale_and_reconnects(fast_simulator: ExchangeSimulator) -> None:
    sim = fast_simulator
    store, tickers = KlineStore(capacity=10), TickerStore()
    source = BinanceKlineSource(sim.url)
    feed = MarketFeed(settings(sim.ws_url, stale_after_secs=0.8, backfill_limit=10), store, tickers, source)
    feed.set_subscriptions({("BTCUSDT", "1m")}, set())
    try:
        async with running(feed):
            await wait_for(lambda: not feed.health().stale, 10, "the first message")
            sim.faults.update({"stall_streams": ["*"]})
            await wait_for(lambda: feed.health().stale, 5, "the feed to notice the silence")
            reconnects = feed.health().reconnects
            await wait_for(lambda: feed.health().reconnects > reconnects, 5, "a reconnect")
            sim.faults.update({"stall_streams": []})
            await wait_for(lambda: not feed.health().stale, 10, "messages again")
    finally:
        await source.close()


@pytest.mark.parametrize("interval", ["7m", "1M"])
def test_unknown_interval_is_a_config_error(interval: str) -> None:
    feed = MarketFeed(FeedSettings(), KlineStore(), TickerStore(), BinanceKlineSource("http://127.0.0.1:9"))
    with pytest.raises(ConfigError, match=interval):
        feed.set_subscriptions({("BTCUSDT", interval)}, set())
