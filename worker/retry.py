"""Exponential backoff with full jitter, a retry helper that retries only TransientError, and how long an
HTTP answer asks us to wait (Retry-After)."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from worker.clock import Clock, LiveClock
from worker.errors import RateLimited, TransientError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Delays of base * 2**attempt, capped, with full jitter (AWS architecture blog's 'full jitter')."""

    base_secs: float = 0.5
    max_secs: float = 30.0

    def delay_secs(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.max_secs, self.base_secs * (2 ** max(0, attempt)))
        return (rng or random).uniform(0, ceiling)


async def retry(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    attempts: int = 5,
    backoff: Backoff = Backoff(),
    clock: Clock | None = None,
) -> T:
    """Run `operation`, retrying TransientError up to `attempts` times in all; re-raise the last one.

    Anything else (including CancelledError) propagates at once. A RateLimited error waits at least as
    long as the other side asked.
    """
    clock = clock or LiveClock()
    for attempt in range(attempts):
        try:
            return await operation()
        except TransientError as error:
            if attempt == attempts - 1:
                raise
            delay = backoff.delay_secs(attempt)
            if isinstance(error, RateLimited) and error.retry_after_secs is not None:
                delay = max(delay, error.retry_after_secs)
            logger.warning(
                "retrying what=%s attempt=%d delay_secs=%.2f error=%s", what, attempt + 1, delay, error
            )
            await clock.sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")


def retry_after_secs(value: str | None) -> float | None:
    """The seconds an HTTP `Retry-After` header asks for (None when absent or not a number of seconds)."""
    text = (value or "").strip()
    try:
        return max(0.0, float(text)) if text else None
    except ValueError:
        return None
