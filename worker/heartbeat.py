"""Tell Supabase this machine is alive: record_machine_heartbeat() every interval (the watchdog's input)."""

from __future__ import annotations

import logging
from datetime import datetime

from worker.clock import Clock
from worker.components import ComponentState
from worker.db.machine import MachineRows
from worker.domain.enums import MachineStatus
from worker.errors import WorkerError

logger = logging.getLogger(__name__)

# Consecutive failed beats before /health reports the heartbeat degraded (the watchdog allows 2 minutes).
FAILURES_BEFORE_DEGRADED = 2


class Heartbeat:
    """Beats every `interval_secs`; a failed beat is retried on the next tick, never fatal."""

    name = "heartbeat"

    def __init__(self, machine: MachineRows, version: str, interval_secs: float, *, clock: Clock) -> None:
        self._machine = machine
        self._version = version
        self._interval_secs = interval_secs
        self._clock = clock
        self._state = ComponentState.STARTING
        self._consecutive_failures = 0
        self.last_beat_at: datetime | None = None

    def state(self) -> ComponentState:
        return self._state

    async def beat(self, status: MachineStatus = MachineStatus.RUNNING) -> bool:
        """Send one heartbeat; True if it was recorded."""
        try:
            await self._machine.record_heartbeat(status, self._version)
        except WorkerError as error:
            self._consecutive_failures += 1
            if self._consecutive_failures >= FAILURES_BEFORE_DEGRADED:
                self._state = ComponentState.DEGRADED
            logger.warning(
                "heartbeat failed consecutive_failures=%d error=%s", self._consecutive_failures, error
            )
            return False
        self._consecutive_failures = 0
        self.last_beat_at = self._clock.now()
        if self._state in (ComponentState.STARTING, ComponentState.DEGRADED):
            self._state = ComponentState.RUNNING
        return True

    async def run(self) -> None:
        while True:
            await self.beat()
            await self._clock.sleep(self._interval_secs)

    async def prepare_shutdown(self) -> None:
        await self.beat(MachineStatus.STOPPING)
        self._state = ComponentState.STOPPED
