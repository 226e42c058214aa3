"""Shipping the worker's log lines to its user's `machine_logs` (the console's logs pane), in batches.

    records -> LogShippingHandler -> LogQueue (bounded, oldest dropped) -> LogShipper.run -> LogSink.record

The handler formats each record's message with the stream handler's masking, so no secret leaves the machine
in a line. Each line gets an id when it is logged, so a batch retried after a lost reply is recorded once. A
batch that fails stays at the head of the queue for the next flush; when the queue is full the oldest lines
go, and the next shipped line says how many. Records of the shipping path itself (the HTTP client and the
database gateway) are not shipped, so a failing send cannot feed itself.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

from worker.clock import Clock
from worker.components import ComponentState
from worker.domain.enums import LogLevel
from worker.domain.logs import LogLine
from worker.errors import TransientError, WorkerError
from worker.log_setup import RedactingFormatter

logger = logging.getLogger(__name__)

# Loggers whose lines would describe the shipping itself.
NOT_SHIPPED: Final = ("worker.log_shipping", "worker.db", "httpx", "httpcore")


class LogSink(Protocol):
    """Where batches go (worker/db/logs.py: record_machine_logs); raises WorkerError when it cannot."""

    async def record(self, lines: list[LogLine]) -> int: ...


@dataclass(frozen=True, slots=True)
class LogShippingSettings:
    interval_secs: float
    batch_lines: int
    queue_lines: int


class LogQueue:
    """Lines waiting to be shipped; thread-safe (records come from threads too)."""

    def __init__(self, capacity: int) -> None:
        self._lines: deque[LogLine] = deque()
        self._capacity = capacity
        self._lock = threading.Lock()
        self.dropped = 0

    def put(self, line: LogLine) -> None:
        with self._lock:
            if len(self._lines) >= self._capacity:
                self._lines.popleft()
                self.dropped += 1
            self._lines.append(line)

    def head(self, count: int) -> list[LogLine]:
        with self._lock:
            return [self._lines[index] for index in range(min(count, len(self._lines)))]

    def remove(self, lines: list[LogLine]) -> None:
        """Drop the shipped lines from the head (lines dropped meanwhile for space are not there anymore)."""
        shipped = {line.id for line in lines}
        with self._lock:
            while self._lines and self._lines[0].id in shipped:
                self._lines.popleft()

    def take_dropped(self) -> int:
        with self._lock:
            dropped, self.dropped = self.dropped, 0
            return dropped

    def __len__(self) -> int:
        return len(self._lines)


class LogShippingHandler(logging.Handler):
    """Queues each record as a LogLine, masked like the stream's lines."""

    def __init__(self, queue: LogQueue, secrets: list[str], level: str) -> None:
        super().__init__(level)
        self._queue = queue
        self._masker = RedactingFormatter(secrets)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(NOT_SHIPPED):
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + self._masker.formatException(record.exc_info)
            self._queue.put(
                LogLine(
                    id=uuid.uuid4(),
                    logged_at=datetime.fromtimestamp(record.created, UTC),
                    level=LogLevel.__members__.get(record.levelname, LogLevel.INFO),
                    logger=record.name,
                    message=self._masker.mask(message),
                )
            )
        except Exception:  # a log call must never fail the code that logs
            self.handleError(record)


class LogShipper:
    """The component that sends the queue to `machine_logs` every `interval_secs`."""

    name = "log-shipper"

    def __init__(
        self, queue: LogQueue, sink: LogSink, settings: LogShippingSettings, *, clock: Clock
    ) -> None:
        self._queue = queue
        self._sink = sink
        self._settings = settings
        self._clock = clock
        self._state = ComponentState.STARTING

    def state(self) -> ComponentState:
        return self._state

    async def run(self) -> None:
        self._state = ComponentState.RUNNING
        while True:
            await self._clock.sleep(self._settings.interval_secs)
            await self.flush()

    async def prepare_shutdown(self) -> None:
        await self.flush()  # the last lines before a stop are the ones a trader looks for

    async def flush(self) -> None:
        """Send what is queued, batch by batch; a failed batch waits for the next flush."""
        dropped = self._queue.take_dropped()
        if dropped:  # said in a shipped line: this module's own log records are not shipped
            message = f"{dropped} log line(s) were dropped here: the queue was full"
            self._queue.put(LogLine(uuid.uuid4(), self._clock.now(), LogLevel.WARNING, __name__, message))
        while batch := self._queue.head(self._settings.batch_lines):
            try:
                await self._sink.record(batch)
            except TransientError as error:
                self._state = ComponentState.DEGRADED
                logger.warning("log shipping paused lines=%d: %s", len(self._queue), error)
                return
            except WorkerError as error:
                # Refused (not a network problem): this batch will never go; do not block the ones after it.
                logger.error("log shipping refused a batch of %d line(s): %s", len(batch), error)
            self._queue.remove(batch)
            self._state = ComponentState.RUNNING
