"""The grid trigger fires on the UTC grid of its period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.scheduler.grid import GridTrigger


def test_grid_fires_on_multiples_of_the_period_plus_the_offset() -> None:
    trigger = GridTrigger(300, offset_secs=5)
    now = datetime(2025, 1, 1, 0, 3, 17, 250_000, tzinfo=UTC)

    first = trigger.get_next_fire_time(None, now)
    second = trigger.get_next_fire_time(first, first)

    assert first == datetime(2025, 1, 1, 0, 5, 5, tzinfo=UTC)
    assert second == first + timedelta(minutes=5)


def test_an_early_run_does_not_move_the_grid() -> None:
    trigger = GridTrigger(60, offset_secs=5)
    early_run = datetime(2025, 1, 1, 0, 0, 0, 310_000, tzinfo=UTC)  # a candle-close event ran the job

    after = trigger.get_next_fire_time(early_run, early_run)

    assert after == datetime(2025, 1, 1, 0, 0, 5, tzinfo=UTC)


def test_missed_runs_coalesce_into_the_next_grid_point() -> None:
    trigger = GridTrigger(1)
    previous = datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC)
    now = previous + timedelta(seconds=7, milliseconds=400)

    assert trigger.get_next_fire_time(previous, now) == previous + timedelta(seconds=8)


def test_a_day_grid_stays_on_utc_midnight_for_years() -> None:
    trigger = GridTrigger(86_400)
    now = datetime(2031, 6, 30, 23, 59, 59, 999_999, tzinfo=UTC)

    assert trigger.get_next_fire_time(None, now) == datetime(2031, 7, 1, tzinfo=UTC)
