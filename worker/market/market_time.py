"""Keeps the worker's market clock on the exchange's time (`GET /api/v3/time`), once a wall second."""

from __future__ import annotations

import logging
from typing import Final, Protocol

from worker.clock import Clock, MarketClock
from worker.errors import TransientError
from worker.log_setup import LogOnce

logger = logging.getLogger(__name__)

SYNC_INTERVAL_SECS: Final = 1.0  # weight 1 of Binance's 6000 a minute


class ServerTime(Protocol):
    async def server_time_ms(self) -> int:
        """The exchange's clock in Unix ms."""
        ...


class MarketClockSync:
    """Samples the exchange's clock into the market clock (stream event times move it between samples)."""

    def __init__(
        self,
        market: MarketClock,
        source: ServerTime,
        *,
        clock: Clock,
        interval_secs: float = SYNC_INTERVAL_SECS,
    ) -> None:
        self._market = market
        self._source = source
        self._clock = clock
        self._interval_secs = interval_secs
        self._log_once = LogOnce(logger, 300.0)

    async def sync_once(self) -> bool:
        """One sample; False (logged, at most every few minutes) when the exchange did not answer."""
        sent = self._clock.monotonic()
        try:
            server_ms = await self._source.server_time_ms()
        except TransientError as error:
            self._log_once.warning("market-time", "exchange time unavailable: %s", error)
            return False
        self._market.sync(server_ms, sent, self._clock.monotonic())
        return True

    async def run(self) -> None:
        while True:
            await self.sync_once()
            await self._clock.sleep(self._interval_secs)
