"""Concurrent calls of one transition RPC sent together: one request and one transaction for every call made
in the same turn of the event loop.

A price that crosses ten positions' stops starts ten closes at once; each must record its order before it
sends it. Sent one by one, the ten records queue behind each other in PostgREST and Postgres (each its own
JWT check, pre-request hook and commit); batched, they cost about one. Every caller still waits for its own
record before it sends, so "recorded before sent" holds per order.

Writes that something waits on to act (a close's order, recorded before it is sent) are urgent: while one
is in flight, the others (fills already done, trailing stops) wait, and keep gathering into their batch.

The first call of a batch leads it: it yields once, so the calls made ready in the same turn join, then
sends them all to the batch RPC (which runs the single RPC for each, in order, in one transaction; see
migration 20261205140000). If the batch is refused because one call is (a stale fill, a missing row), the
transaction rolled back whole, and each call is sent again alone so every caller gets its own answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from worker.db.client import Database, InsufficientPaperBalance, Refused, StaleState
from worker.errors import TransientError

MAX_BATCH: Final = 50  # calls per request: a bigger burst goes as several batches, side by side
# Answers about one call of a batch (the others were fine): learned by sending each call alone.
_ONE_CALL_REFUSED: Final = (Refused, StaleState, InsufficientPaperBalance)


class Urgency:
    """Writes that something waits on to act (an order recorded before it is sent) go first: while one is
    in flight, the writes that only keep the books (fills already done, trailing stops) wait to be sent."""

    def __init__(self) -> None:
        self._urgent = 0
        self._clear = asyncio.Event()
        self._clear.set()

    @contextlib.contextmanager
    def urgent(self) -> Iterator[None]:
        self._urgent += 1
        self._clear.clear()
        try:
            yield
        finally:
            self._urgent -= 1
            if not self._urgent:
                self._clear.set()

    async def none_urgent(self) -> None:
        await self._clear.wait()


@dataclass(slots=True)
class _Call:
    arguments: Mapping[str, Any]
    answer: asyncio.Future[Any]


class BatchedRpc:
    """`call(arguments)` of `single`, sent with the calls made alongside it as one call of `batch`."""

    def __init__(
        self,
        db: Database,
        single: str,
        batch: str,
        *,
        urgency: Urgency,
        urgent: bool = False,
        one_at_a_time: bool = False,
    ) -> None:
        self._db = db
        self._single = single
        self._batch = batch
        self._urgency = urgency
        self._urgent = urgent
        self._forming: list[_Call] | None = None
        # One batch in flight: the calls made meanwhile wait and go together next. For writes that contend
        # for one row (every paper fill moves the user's paper balance), so batches never queue on its lock,
        # and for floods of bookkeeping (a sweep's trailing stops), so they hold one database connection.
        self._in_flight = asyncio.Lock() if one_at_a_time else contextlib.nullcontext()

    async def call(self, arguments: Mapping[str, Any]) -> Any:
        """What `single(**arguments)` returns (or raises), as if it had been called alone."""
        call = _Call(arguments, asyncio.get_running_loop().create_future())
        batch = self._forming
        if batch is not None and len(batch) < MAX_BATCH:
            batch.append(call)
        else:
            batch = self._forming = [call]
            await self._lead(batch)
        return await call.answer

    async def _lead(self, batch: list[_Call]) -> None:
        try:
            await asyncio.sleep(0)  # the calls made ready in this turn of the loop join the batch
            if self._urgent:
                with self._urgency.urgent():
                    self._close(batch)
                    answers = await self._send([call.arguments for call in batch])
            else:
                async with self._in_flight:
                    await self._urgency.none_urgent()  # the batch stays open meanwhile
                    self._close(batch)
                    answers = await self._send([call.arguments for call in batch])
        except asyncio.CancelledError:
            # Only at shutdown (no caller is cancelled otherwise); the others must not wait for a leader that
            # is gone. The leader is batch[0], and nobody will read its answer.
            self._close(batch)
            batch[0].answer.cancel()
            _fail(batch, TransientError(f"{self._batch}(): cancelled before it was answered"))
            raise
        except Exception as error:  # the whole batch failed alike (the token refused, the database gone)
            _fail(batch, error)
            return
        for call, answer in zip(batch, answers, strict=True):
            if call.answer.done():  # that caller was cancelled
                continue
            if isinstance(answer, Exception):
                call.answer.set_exception(answer)
            else:
                call.answer.set_result(answer)

    def _close(self, batch: list[_Call]) -> None:
        if self._forming is batch:
            self._forming = None

    async def _send(self, calls: list[Mapping[str, Any]]) -> list[Any]:
        if len(calls) == 1:
            return [await self._alone(calls[0])]
        try:
            answers = await self._db.rpc(self._batch, {"calls": calls}, what=f"{self._batch}() x{len(calls)}")
        except _ONE_CALL_REFUSED:
            async with asyncio.TaskGroup() as group:
                alone = [group.create_task(self._alone(arguments)) for arguments in calls]
            return [task.result() for task in alone]
        if not isinstance(answers, list) or len(answers) != len(calls):
            raise TransientError(f"{self._batch}(): {len(calls)} calls but not as many answers")
        return answers

    async def _alone(self, arguments: Mapping[str, Any]) -> Any:
        """One call's answer, or the error it failed with (returned, so it reaches only its caller)."""
        try:
            return await self._db.rpc(self._single, arguments)
        except Exception as error:
            return error


def _fail(batch: list[_Call], error: Exception) -> None:
    for call in batch:
        if not call.answer.done():
            call.answer.set_exception(error)
