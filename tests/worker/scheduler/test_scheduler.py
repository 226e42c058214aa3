"""The scheduler against the exchange simulator's real streams: candle-close runs, fixed cadence, pause,
remove and the wall-clock fallback, with the sandbox and the local stack behind the engine."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from devstack.stack import DevStack
from tests.factories import AppUser, create_machine, create_user, delete_user
from tests.worker.signals.harness import NEVER, SYMBOLS, insert_trader, running_engine, until
from worker.scheduler.scheduler import SchedulerSettings

# Every check takes tens of milliseconds of CPU (well inside the 250 ms deadline).
BUSY = (
    "def check_signal(symbol, ticker, klines):\n"
    "    total = 0\n"
    "    for i in range(150000):\n"
    "        total += i\n"
    "    return total < 0\n"
)


@pytest.fixture
def user(db: psycopg.Connection[Any]) -> Iterator[tuple[AppUser, str]]:
    created = create_user(db)
    machine_id = create_machine(db, created)
    yield created, machine_id
    delete_user(db, created)


async def test_candle_close_runs_start_within_a_second_of_the_closing_kline(
    stack: DevStack, db: psycopg.Connection[Any], user: tuple[AppUser, str]
) -> None:
    trader = insert_trader(db, user[0], NEVER, check_interval="1m_close")
    closes: dict[int, float] = {}  # candle open time -> wall time the first closing kline was stored

    async with running_engine(stack, *user, speed=60) as parts:
        parts.feed.add_kline_closed_listener(
            lambda symbol, interval, open_ms: closes.setdefault(open_ms, time.time()) and None
        )
        await parts.scheduler.add(trader)
        await parts.wait_for_data(SYMBOLS, "1m")
        ready = time.time()  # a close may come before the first ticker: those runs skip stale symbols

        def close_runs() -> list[Any]:
            return [
                r for r in parts.scheduler.recent_runs
                if r.trigger == "candle_close" and r.started_at.timestamp() >= ready
            ]  # fmt: skip

        await until(lambda: len(close_runs()) >= 5)

    runs = close_runs()
    delays = []
    for run in runs:
        # The run covers the newest candle closed before it started.
        closed_before = [at for at in closes.values() if at <= run.started_at.timestamp() + 0.001]
        delays.append(run.started_at.timestamp() - max(closed_before))
    assert len(runs) >= 5
    assert max(delays) < 1.0, delays
    assert all(run.checked == len(SYMBOLS) and not run.errors for run in runs)
    assert len(closes) >= len(runs)


async def test_fixed_intervals_keep_their_cadence_under_load_and_never_stack(
    stack: DevStack, db: psycopg.Connection[Any], user: tuple[AppUser, str]
) -> None:
    quick = [insert_trader(db, user[0], NEVER, check_interval="1s", name=f"quick {n}") for n in range(8)]
    busy = [insert_trader(db, user[0], BUSY, check_interval="1s", name=f"busy {n}") for n in range(4)]

    # Timers run on market time: at 1x a market second is a wall second, as live.
    async with running_engine(stack, *user, speed=1) as parts:
        for trader in quick + busy:
            await parts.scheduler.add(trader)
        await parts.wait_for_data(SYMBOLS, "1m")
        await asyncio.sleep(1 - time.time() % 1)
        started = time.time()
        await asyncio.sleep(6.2)
        runs = [r for r in parts.scheduler.recent_runs if r.started_at.timestamp() >= started]

    by_trader = {t.id: [r for r in runs if r.trader_id == t.id] for t in quick + busy}
    offsets_ms = sorted(r.market_time.microsecond / 1000 for r in runs if r.market_time is not None)
    for trader in quick + busy:
        trader_runs = by_trader[trader.id]
        assert 5 <= len(trader_runs) <= 7, (trader.name, len(trader_runs))
        starts = sorted(r.started_at.timestamp() for r in trader_runs)
        # max_instances=1: a run never starts before the trader's previous one has ended.
        for earlier, later in itertools.pairwise(trader_runs):
            assert later.started_at.timestamp() >= earlier.started_at.timestamp() + earlier.duration_ms / 1000
        assert all(0.5 < b - a < 1.5 for a, b in itertools.pairwise(starts))
    # On the UTC second grid of market time: the median run starts within 100 ms of its second, every one
    # within 600 ms.
    assert len(offsets_ms) == len(runs)
    assert offsets_ms[len(offsets_ms) // 2] < 100, offsets_ms
    assert offsets_ms[-1] < 600, offsets_ms
    assert all(r.checked == len(SYMBOLS) and not r.failure for r in runs)


async def test_pause_and_remove_take_effect_at_once(
    stack: DevStack, db: psycopg.Connection[Any], user: tuple[AppUser, str]
) -> None:
    paused = insert_trader(db, user[0], NEVER, check_interval="1s", name="to pause")
    removed = insert_trader(db, user[0], NEVER, check_interval="1s", name="to remove")
    kept = insert_trader(db, user[0], NEVER, check_interval="1s", name="kept")

    async with running_engine(stack, *user, speed=1) as parts:
        for trader in (paused, removed, kept):
            await parts.scheduler.add(trader)
        await parts.wait_for_data(SYMBOLS, "1m")
        await asyncio.sleep(2.2)
        await parts.scheduler.pause(paused)
        await parts.scheduler.remove(removed)
        stopped_at = datetime.now(UTC)
        jobs_after = parts.scheduler.job_ids()
        await asyncio.sleep(2.5)
        await parts.scheduler.resume(paused)
        await asyncio.sleep(1.5)

    runs = list(parts.scheduler.recent_runs)

    def started_between(trader_id: object, start: datetime, end: datetime) -> int:
        return sum(1 for r in runs if r.trader_id == trader_id and start < r.started_at < end)

    resumed_at = stopped_at.timestamp() + 2.5
    assert not any(str(t.id) in job for job in jobs_after for t in (paused, removed))
    assert any(str(kept.id) in job for job in jobs_after)
    quiet = datetime.fromtimestamp(resumed_at - 0.05, UTC)
    assert started_between(paused.id, stopped_at, quiet) == 0
    assert started_between(removed.id, stopped_at, datetime.now(UTC)) == 0
    assert started_between(kept.id, stopped_at, quiet) >= 2
    assert started_between(paused.id, quiet, datetime.now(UTC)) >= 1  # resumed
    assert str(removed.id) not in parts.metrics.traders


async def test_the_wall_clock_fallback_backfills_closes_the_stream_never_delivered(
    stack: DevStack, db: psycopg.Connection[Any], user: tuple[AppUser, str]
) -> None:
    trader = insert_trader(db, user[0], NEVER, check_interval="5m_close", timeframes=("1m",))
    settings = SchedulerSettings(default_symbols=SYMBOLS, fallback_backfill_wait_secs=5.0)

    async with running_engine(stack, *user, paused=True, scheduler_settings=settings) as parts:
        await parts.scheduler.add(trader)
        await parts.wait_for_data(SYMBOLS, "5m")
        await parts.wait_for_data(SYMBOLS, "1m")

        def fallbacks() -> int:
            return sum(r.trigger == "close_fallback" for r in parts.scheduler.recent_runs)

        parts.scheduler.run_now(trader.id)  # the first fallback runs on the newest closed candle
        await until(lambda: fallbacks() == 1)
        parts.scheduler.run_now(trader.id)  # nothing closed since: nothing to run
        await asyncio.sleep(0.5)
        unchanged = fallbacks()
        # The 5m streams go silent while the market moves on 15 minutes (the 1m streams keep flowing).
        parts.simulator.faults.update({"stall_streams": [f"{s.lower()}@kline_5m" for s in SYMBOLS]})
        before_5m = {s: parts.store.get(s, "5m").last_open_time for s in SYMBOLS}  # type: ignore[union-attr]
        parts.simulator.clock.advance_ms(15 * 60_000)
        await asyncio.sleep(1.5)
        parts.scheduler.run_now(trader.id)
        await until(lambda: fallbacks() == 2, 10)
        after_5m = {s: parts.store.get(s, "5m").last_open_time for s in SYMBOLS}  # type: ignore[union-attr]

    runs = list(parts.scheduler.recent_runs)
    assert unchanged == 1
    assert not any(r.trigger == "candle_close" for r in runs)  # no close was ever announced
    assert all(after_5m[s] >= before_5m[s] + 15 * 60_000 for s in SYMBOLS)  # type: ignore[operator]
    assert [r.checked for r in runs if r.trigger == "close_fallback"] == [2, 2]


async def test_a_runs_share_of_its_interval_is_measured_on_the_market_clock(
    stack: DevStack, db: psycopg.Connection[Any], user: tuple[AppUser, str]
) -> None:
    trader = insert_trader(db, user[0], BUSY, check_interval="1m_close")
    speed = 30.0  # a 1m interval is 2 wall seconds

    async with running_engine(stack, *user, speed=speed) as parts:
        await parts.scheduler.add(trader)
        await parts.wait_for_data(SYMBOLS, "1m")
        await until(lambda: sum(r.trigger == "candle_close" for r in parts.scheduler.recent_runs) >= 3)
        runs = [r for r in parts.scheduler.recent_runs if r.trigger == "candle_close"]
        ratio = parts.metrics.sweeps.peak_ratio()

    # What scale-machines reads: the longest run's wall time against the interval's wall time.
    wall_ratio = max(r.duration_ms for r in runs) / 1000 / (60 / speed)
    assert 0.5 * wall_ratio < ratio < 2 * wall_ratio, (ratio, wall_ratio)
