"""Log shipping: records become masked lines with ids, batches go in order, a failed batch is retried with the
same ids, a refused one is dropped, a full queue drops the oldest lines and says so."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from worker.clock import LiveClock
from worker.components import ComponentState
from worker.domain.enums import LogLevel
from worker.domain.logs import LogLine
from worker.errors import TransientError, WorkerError
from worker.log_shipping import LogQueue, LogShipper, LogShippingHandler, LogShippingSettings

SECRET = "machine-token-abcdef123456"


class FakeSink:
    """Records each batch; fails the next calls with the queued errors."""

    def __init__(self) -> None:
        self.batches: list[list[LogLine]] = []
        self.failures: list[WorkerError] = []

    async def record(self, lines: list[LogLine]) -> int:
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(list(lines))
        return len(lines)

    @property
    def lines(self) -> list[LogLine]:
        return [line for batch in self.batches for line in batch]


@pytest.fixture
def queue() -> LogQueue:
    return LogQueue(capacity=100)


@pytest.fixture
def shipping_logger(queue: LogQueue) -> Iterator[logging.Logger]:
    """A logger whose records reach the queue (INFO and up), as the root logger's would."""
    handler = LogShippingHandler(queue, [SECRET], "INFO")
    logger = logging.getLogger("worker.test_shipping")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger
    logger.removeHandler(handler)
    logger.propagate = True


def shipper(queue: LogQueue, sink: FakeSink, batch_lines: int = 50) -> LogShipper:
    settings = LogShippingSettings(interval_secs=1.0, batch_lines=batch_lines, queue_lines=100)
    return LogShipper(queue, sink, settings, clock=LiveClock())


async def test_records_are_shipped_in_order_masked_with_their_level(
    queue: LogQueue, shipping_logger: logging.Logger
) -> None:
    sink = FakeSink()
    shipping_logger.debug("below the level: not shipped")
    shipping_logger.info("order placed client_order_id=%s", "tm-1")
    shipping_logger.warning("token %s refused", SECRET)
    try:
        raise ValueError(f"bad answer for {SECRET}")
    except ValueError:
        shipping_logger.exception("analysis failed")
    logging.getLogger("worker.db.client").addHandler(shipping_logger.handlers[0])
    logging.getLogger("worker.db.client").warning("about the shipping path: not shipped")
    logging.getLogger("worker.db.client").removeHandler(shipping_logger.handlers[0])

    await shipper(queue, sink).flush()

    lines = sink.lines
    assert [line.level for line in lines] == [LogLevel.INFO, LogLevel.WARNING, LogLevel.ERROR]
    assert (
        lines[0].message == "order placed client_order_id=tm-1" and lines[0].logger == "worker.test_shipping"
    )
    assert lines[1].message == "token *** refused"
    assert "Traceback" in lines[2].message and "ValueError: bad answer for ***" in lines[2].message
    assert all(SECRET not in line.message for line in lines)
    assert len({line.id for line in lines}) == 3 and len(queue) == 0


async def test_a_failed_batch_is_sent_again_with_the_same_ids(
    queue: LogQueue, shipping_logger: logging.Logger
) -> None:
    sink = FakeSink()
    sink.failures.append(TransientError("gateway timeout"))
    component = shipper(queue, sink)
    for index in range(3):
        shipping_logger.info("line %d", index)

    await component.flush()
    state_after_failure = component.state()
    shipping_logger.info("line 3")
    await component.flush()

    assert state_after_failure is ComponentState.DEGRADED
    assert component.state() is ComponentState.RUNNING
    assert [line.message for line in sink.lines] == ["line 0", "line 1", "line 2", "line 3"]
    assert len(sink.batches) == 1, "nothing was lost and nothing sent twice"


async def test_a_refused_batch_is_dropped_and_the_next_ones_go(
    queue: LogQueue, shipping_logger: logging.Logger
) -> None:
    sink = FakeSink()
    sink.failures.append(WorkerError("refused: invalid input"))
    for index in range(4):
        shipping_logger.info("line %d", index)

    await shipper(queue, sink, batch_lines=2).flush()

    assert [[line.message for line in batch] for batch in sink.batches] == [["line 2", "line 3"]]


async def test_a_full_queue_drops_the_oldest_lines_and_says_how_many(shipping_logger: logging.Logger) -> None:
    small = LogQueue(capacity=3)
    handler = shipping_logger.handlers[0]
    assert isinstance(handler, LogShippingHandler)
    shipping_logger.removeHandler(handler)
    shipping_logger.addHandler(LogShippingHandler(small, [SECRET], "INFO"))
    sink = FakeSink()
    for index in range(5):
        shipping_logger.info("line %d", index)

    await shipper(small, sink).flush()

    messages = [line.message for line in sink.lines]
    assert messages[:2] == ["line 3", "line 4"]
    assert messages[2] == "2 log line(s) were dropped here: the queue was full"


async def test_lines_from_threads_are_all_shipped_in_batches(
    queue: LogQueue, shipping_logger: logging.Logger
) -> None:
    sink = FakeSink()
    threads = [
        threading.Thread(target=lambda n=n: [shipping_logger.info("t%d %d", n, i) for i in range(20)])
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    await shipper(queue, sink, batch_lines=30).prepare_shutdown()

    assert len(sink.lines) == 80 and len({line.id for line in sink.lines}) == 80
    assert [len(batch) for batch in sink.batches] == [30, 30, 20]
