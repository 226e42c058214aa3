"""Binance's reachability as the worker's requests find it, and its reports: the streams and the kline REST
calls against the exchange simulator stopped and started again, HTTP answers told from failures, and the
reporter's changes, repeats and retries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from devstack.exchange.server import ExchangeSimulator, SimulatorConfig
from devstack.fly.machines import free_port
from tests.worker.market.conftest import START_MS
from tests.worker.market.test_feed import running, settings, wait_for
from worker.errors import RateLimited, TransientError
from worker.market.feed import MarketFeed
from worker.market.reachability import CHECK_SECS, Reachability, ReachabilityReporter
from worker.market.recordings import SymbolData
from worker.market.rest import BinanceKlineSource
from worker.market.store import KlineStore
from worker.market.tickers import TickerStore


async def test_an_exchange_that_stops_is_unreachable_until_it_streams_again(
    recorded: dict[str, SymbolData],
) -> None:
    config = SimulatorConfig(port=free_port(), start_ms=START_MS, speed=120.0, kline_push_secs=0.2)
    sim = ExchangeSimulator(config, recorded)
    await sim.start()
    reachability = Reachability()
    source = BinanceKlineSource(sim.url, reachability=reachability)
    feed = MarketFeed(settings(sim.ws_url), KlineStore(), TickerStore(), source, reachability=reachability)
    feed.set_subscriptions({("BTCUSDT", "1m")}, {"BTCUSDT"})
    try:
        async with running(feed):
            await wait_for(lambda: reachability.reachable is True, 10, "the first stream message")
            await sim.stop()
            await wait_for(lambda: reachability.reachable is False, 10, "the outage to be seen")
            outage = reachability.detail
            await asyncio.sleep(1.0)  # reconnects and backfills keep failing meanwhile
            still_down = reachability.reachable
            await sim.start()
            await wait_for(lambda: reachability.reachable is True, 10, "the recovery")
    finally:
        await sim.stop()
        await source.close()

    assert outage is not None and outage.startswith("streams:"), outage
    assert still_down is False


async def test_rest_failures_are_unreachable_and_any_http_answer_is_reachable(
    fast_simulator: ExchangeSimulator,
) -> None:
    refused = Reachability()
    closed = BinanceKlineSource(f"http://127.0.0.1:{free_port()}", reachability=refused)
    limited = Reachability()
    answering = BinanceKlineSource(fast_simulator.url, reachability=limited)
    try:
        with pytest.raises(TransientError):
            await closed.fetch_klines("BTCUSDT", "1m", start_ms=None, limit=5)
        limited.unreachable("an earlier failure")
        fast_simulator.faults.update({"reject_status": 429, "reject_count": 1})
        with pytest.raises(RateLimited):
            await answering.fetch_klines("BTCUSDT", "1m", start_ms=None, limit=5)
    finally:
        await closed.close()
        await answering.close()

    assert refused.reachable is False and refused.detail is not None and "REST klines" in refused.detail
    assert limited.reachable is True and limited.detail is None, "a 429 is Binance answering"


class SteppedClock:
    """Monotonic time that moves only when the test says (sleep returns at once)."""

    def __init__(self) -> None:
        self.secs = 0.0

    def now(self) -> datetime:
        return datetime(2025, 1, 1, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.secs

    async def sleep(self, secs: float) -> None:
        await asyncio.sleep(0)


async def test_reporter_reports_changes_repeats_a_failure_and_retries_a_failed_report() -> None:
    reachability, clock = Reachability(), SteppedClock()
    reports: list[tuple[float, bool, str | None]] = []
    refuse_next = [False]

    async def report(ok: bool, detail: str | None) -> None:
        if refuse_next[0]:
            refuse_next[0] = False
            raise TransientError("PostgREST unavailable")
        reports.append((clock.secs, ok, detail))

    reporter = ReachabilityReporter(reachability, report, repeat_failure_secs=60.0, clock=clock)

    async def at(secs: float) -> None:
        clock.secs = secs
        await reporter.report_if_due()

    await at(0)  # nothing known yet: nothing to say
    reachability.answered()
    await at(1)
    await at(2)
    reachability.unreachable("streams: ConnectionRefusedError()")
    refuse_next[0] = True
    await at(3)  # the report fails: tried again at the next check
    await at(3 + CHECK_SECS)
    reachability.unreachable("streams: still refused")
    await at(30)
    await at(64)  # a minute after the last report: the failure again
    reachability.answered()
    await at(65)
    await at(200)

    assert reports == [
        (1, True, None),
        (3 + CHECK_SECS, False, "streams: ConnectionRefusedError()"),
        (64, False, "streams: still refused"),
        (65, True, None),
    ]
