"""The market clock follows the exchange's time at its pace: live, replayed fast, paused, jumped."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from worker.clock import MarketClock

START_MS = 1_735_873_200_000.0  # 2025-01-03 03:00 UTC


class WallClock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.secs = 1000.0

    def now(self) -> datetime:
        return datetime(2026, 12, 5, tzinfo=UTC) + timedelta(seconds=self.secs)

    def monotonic(self) -> float:
        return self.secs

    async def sleep(self, secs: float) -> None:
        self.secs += secs


class Exchange:
    """Market time as a replay runs it: `speed` market ms per wall ms from an anchor; jumps and pauses."""

    def __init__(self, wall: WallClock, speed: float) -> None:
        self.wall, self.speed = wall, speed
        self.anchor_ms, self.anchor_wall = START_MS, wall.secs

    def now_ms(self) -> float:
        return self.anchor_ms + (self.wall.secs - self.anchor_wall) * 1000 * self.speed

    def set_speed(self, speed: float) -> None:
        self.anchor_ms, self.anchor_wall, self.speed = self.now_ms(), self.wall.secs, speed

    def jump(self, delta_ms: float) -> None:
        self.anchor_ms, self.anchor_wall = self.now_ms() + delta_ms, self.wall.secs


def sync(clock: MarketClock, exchange: Exchange, wall: WallClock, *, latency_secs: float = 0.002) -> None:
    sent = wall.secs
    wall.secs += latency_secs / 2
    server_ms = exchange.now_ms()
    wall.secs += latency_secs / 2
    clock.sync(server_ms, sent, wall.secs)


def run(clock: MarketClock, exchange: Exchange, wall: WallClock, seconds: int) -> None:
    for _ in range(seconds):
        wall.secs += 1.0 - 0.002
        sync(clock, exchange, wall)


def test_before_any_sample_the_market_clock_is_the_wall_clock() -> None:
    wall = WallClock()
    clock = MarketClock(wall)

    wall.secs += 5

    assert clock.now() == wall.now()


def test_a_replay_at_300x_is_followed_at_its_pace_between_samples() -> None:
    wall = WallClock()
    exchange, clock = Exchange(wall, 300.0), MarketClock(wall)

    run(clock, exchange, wall, 3)
    wall.secs += 0.5

    assert abs(clock.now_ms() - exchange.now_ms()) < 5 * 300  # within the round trip's midpoint error
    assert abs(clock.rate - 300) < 1


def test_a_paused_market_holds_and_a_jump_never_makes_the_clock_race_ahead() -> None:
    wall = WallClock()
    exchange, clock = Exchange(wall, 0.0), MarketClock(wall)
    run(clock, exchange, wall, 2)

    exchange.jump(3_600_000)  # a replay jumped an hour while paused
    run(clock, exchange, wall, 1)
    wall.secs += 0.9
    after_jump = clock.now_ms()
    run(clock, exchange, wall, 2)

    assert after_jump == exchange.now_ms()  # it jumped with the market and held there
    assert clock.now_ms() == exchange.now_ms()
    assert clock.rate == 0


def test_a_resumed_replay_is_followed_once_two_samples_measured_its_new_pace() -> None:
    wall = WallClock()
    exchange, clock = Exchange(wall, 0.0), MarketClock(wall)
    run(clock, exchange, wall, 2)

    exchange.set_speed(600.0)
    run(clock, exchange, wall, 3)
    wall.secs += 0.25

    assert abs(clock.now_ms() - exchange.now_ms()) < 5 * 600
    assert abs(clock.rate - 600) < 1


def test_market_events_move_the_clock_forward_never_back() -> None:
    wall = WallClock()
    exchange, clock = Exchange(wall, 1.0), MarketClock(wall)
    run(clock, exchange, wall, 2)
    before = clock.now_ms()

    clock.observe(before - 10_000)  # a late event
    assert clock.now_ms() == before
    clock.observe(before + 1_500)  # an event stamped ahead of our estimate
    assert clock.now_ms() == before + 1_500


def test_rows_stamped_on_the_wall_clock_are_placed_on_the_market_time_line_by_their_age() -> None:
    wall = WallClock()
    exchange, clock = Exchange(wall, 60.0), MarketClock(wall)
    run(clock, exchange, wall, 3)
    ten_wall_seconds_ago = wall.now() - timedelta(seconds=10)

    market_time = clock.to_market(ten_wall_seconds_ago)

    assert abs((clock.now() - market_time).total_seconds() - 600) < 1
    assert abs((clock.to_wall(market_time) - ten_wall_seconds_ago).total_seconds()) < 0.01


async def test_sleep_until_wakes_when_market_time_arrives_or_when_told() -> None:
    clock = MarketClock()  # the real wall clock: before any sample, market time is wall time
    wake = asyncio.Event()

    started = clock.now_ms()
    await clock.sleep(0.05)
    slept_ms = clock.now_ms() - started
    asyncio.get_running_loop().call_later(0.05, wake.set)
    async with asyncio.timeout(1):
        await clock.sleep_until(clock.now_ms() + 3_600_000, wake)

    assert 50 <= slept_ms < 500
    assert wake.is_set()
