"""Repeating jobs on the market clock: each fires on its grid, one run at a time, missed runs coalesced.

APScheduler's model (a trigger per job, `max_instances=1`, coalescing, a misfire grace) on a clock it
cannot take: APScheduler reads `datetime.now()` itself, while a trader's timers run on market time, so
that a replay at any speed runs them as often per market hour as live trading does. Every run is a task
of this runner's TaskGroup; cancelling `run()` cancels the runs under way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from worker.clock import Clock
from worker.scheduler.grid import GridTrigger

logger = logging.getLogger(__name__)

Action = Callable[[], Awaitable[None]]


class TimerClock(Clock, Protocol):
    async def sleep_until(self, market_ms: float, wake: asyncio.Event | None = None) -> None:
        """Until the clock reads `market_ms` (Unix ms), or until `wake` is set."""
        ...


@dataclass(eq=False)
class _Job:
    id: str
    trigger: GridTrigger
    action: Action
    grace_secs: float
    next_run: datetime
    running: bool = False


class Timers:
    """Jobs keyed by id; `add` replaces a job of the same id. `run()` runs them until cancelled."""

    def __init__(self, clock: TimerClock) -> None:
        self._clock = clock
        self._jobs: dict[str, _Job] = {}
        self._changed = asyncio.Event()
        self._paused = False

    def add(self, job_id: str, trigger: GridTrigger, action: Action, *, grace_secs: float) -> None:
        now = self._clock.now()
        self._jobs[job_id] = _Job(job_id, trigger, action, grace_secs, trigger.get_next_fire_time(None, now))
        self._changed.set()

    def remove(self, job_id: str) -> None:
        """Forget the job (a run under way finishes)."""
        if self._jobs.pop(job_id, None) is not None:
            self._changed.set()

    def run_now(self, job_id: str) -> bool:
        """Fire the job as soon as it is not running; False when there is no such job."""
        job = self._jobs.get(job_id)
        if job is None:
            return False
        job.next_run = min(job.next_run, self._clock.now())
        self._changed.set()
        return True

    def pause(self) -> None:
        """Start no runs until `resume` (runs under way finish)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._changed.set()

    def job_ids(self) -> set[str]:
        return set(self._jobs)

    def next_run_time(self, job_id: str) -> datetime | None:
        job = self._jobs.get(job_id)
        return job.next_run if job is not None else None

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            while True:
                self._changed.clear()
                if not self._paused:
                    self._start_due(group)
                upcoming = [job.next_run for job in self._jobs.values() if not job.running]
                if self._paused or not upcoming:
                    await self._changed.wait()
                else:
                    await self._clock.sleep_until(min(upcoming).timestamp() * 1000, self._changed)

    def _start_due(self, group: asyncio.TaskGroup) -> None:
        now = self._clock.now()
        for job in list(self._jobs.values()):
            if job.running or job.next_run > now:
                continue
            late_secs = (now - job.next_run).total_seconds()
            job.next_run = job.trigger.get_next_fire_time(job.next_run, now)
            if late_secs > job.grace_secs:
                # Later than its grace: the next grid point is closer than catching up would be.
                logger.debug("timer run skipped job=%s late_secs=%.1f", job.id, late_secs)
                continue
            job.running = True
            group.create_task(self._run(job), name=f"timer-{job.id}")

    async def _run(self, job: _Job) -> None:
        try:
            await job.action()
        except Exception:  # a job must never die silently
            logger.exception("timer job failed job=%s", job.id)
        finally:
            job.running = False
            self._changed.set()
