"""retry() retries only transient errors, backs off within bounds and honours Retry-After."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from worker.errors import OrderRejected, RateLimited, TransientError
from worker.retry import Backoff, retry


class RecordingClock:
    def __init__(self) -> None:
        self.slept: list[float] = []

    def now(self) -> datetime:
        return datetime(2025, 1, 1, tzinfo=UTC)

    def monotonic(self) -> float:
        return sum(self.slept)

    async def sleep(self, secs: float) -> None:
        self.slept.append(secs)


async def test_transient_errors_are_retried_until_success() -> None:
    clock, calls = RecordingClock(), []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("blip")
        return "ok"

    assert await retry(flaky, what="flaky", clock=clock) == "ok"
    assert len(calls) == 3
    assert len(clock.slept) == 2


async def test_gives_up_after_the_last_attempt() -> None:
    clock = RecordingClock()

    async def always_down() -> None:
        raise TransientError("down")

    with pytest.raises(TransientError, match="down"):
        await retry(always_down, what="down", attempts=4, clock=clock)
    assert len(clock.slept) == 3


async def test_other_errors_are_not_retried() -> None:
    clock, calls = RecordingClock(), []

    async def rejected() -> None:
        calls.append(1)
        raise OrderRejected("insufficient balance")

    with pytest.raises(OrderRejected):
        await retry(rejected, what="order", clock=clock)
    assert (len(calls), clock.slept) == (1, [])


async def test_rate_limit_waits_at_least_retry_after() -> None:
    clock, calls = RecordingClock(), []

    async def limited() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RateLimited("429", retry_after_secs=7.5)
        return "ok"

    await retry(limited, what="limited", backoff=Backoff(base_secs=0.01, max_secs=0.02), clock=clock)
    assert clock.slept[0] >= 7.5


def test_backoff_delays_stay_within_the_exponential_ceiling() -> None:
    backoff, rng = Backoff(base_secs=0.5, max_secs=30), random.Random(7)

    for attempt in range(12):
        delays = [backoff.delay_secs(attempt, rng) for _ in range(200)]
        ceiling = min(30, 0.5 * 2**attempt)
        assert all(0 <= delay <= ceiling for delay in delays)
        assert max(delays) > ceiling * 0.8  # full jitter spreads over the whole range
