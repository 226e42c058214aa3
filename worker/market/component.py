"""The market feed as a Component of the worker: runs it and the market clock's sync, and reports the feed's
connection and freshness."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Final

from worker.clock import Clock
from worker.components import START_GRACE_SECS, ComponentState
from worker.market.feed import MarketFeed
from worker.market.market_time import MarketClockSync
from worker.market.rest import BinanceKlineSource
from worker.metrics import WorkerMetrics

_METRICS_PERIOD_SECS: Final = 1.0


class MarketFeedComponent:
    """Runs the market feed and reports its connection and freshness to the metrics."""

    name = "market-feed"

    def __init__(
        self,
        feed: MarketFeed,
        source: BinanceKlineSource,
        metrics: WorkerMetrics,
        *,
        clock: Clock,
        sync: MarketClockSync | None = None,
    ) -> None:
        self.feed = feed
        self._sync = sync
        self._source = source
        self._metrics = metrics
        self._clock = clock
        self._started = clock.monotonic()

    def state(self) -> ComponentState:
        health = self.feed.health()
        if health.streams == 0 or (health.connected and not health.stale):
            return ComponentState.RUNNING
        if health.last_message_at is None and self._clock.monotonic() - self._started < START_GRACE_SECS:
            return ComponentState.STARTING
        return ComponentState.DEGRADED

    def websocket_status(self) -> str:
        health = self.feed.health()
        if health.streams == 0:
            return "idle"
        if health.connected:
            return "stale" if health.stale else "connected"
        return "connecting" if health.last_message_at is None else "disconnected"

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.feed.run(), name="market-feed")
                group.create_task(self._report(), name="market-feed-metrics")
                if self._sync is not None:
                    group.create_task(self._sync.run(), name="market-clock-sync")
        finally:
            await self._source.close()

    async def prepare_shutdown(self) -> None:
        return None

    async def _report(self) -> None:
        while True:
            self._metrics.websocket_status = self.websocket_status()
            newest_ms = max((series.changed_at_ms for series in self.feed.store), default=0)
            if newest_ms:
                self._metrics.last_kline_update = datetime.fromtimestamp(newest_ms / 1000, UTC)
            await self._clock.sleep(_METRICS_PERIOD_SECS)
