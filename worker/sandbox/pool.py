"""A small pool of sandbox processes: start them, hand each one batch at a time, kill and replace on failure.

Every batch is one program over a list of symbols. The worker watches each batch from outside: results
must keep arriving (the sandbox sends them at least every few tens of milliseconds), and a process that
is silent for longer than the per-check deadline plus a grace period is killed, whatever it is doing. A
process that reports a fatal error, exits, crashes or sends a malformed frame is killed too, and a new
one takes its place before the failing batch returns, so the next batch finds a full pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import sys
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from worker.errors import ConfigError, TransientError
from worker.sandbox import protocol
from worker.sandbox.compiler import SignalProgram
from worker.sandbox.snapshot import KlineSnapshot

logger = logging.getLogger(__name__)

# The sandbox gets no environment from the worker (which holds the machine token and Binance keys);
# numeric libraries are kept to one thread so a process stays small and its CPU time is its own.
CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"}
EXIT_WAIT_SECS = 5.0


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """How the pool runs: process count, limits and timings (per-trader deadlines override the default)."""

    processes: int = 2
    # Address space each process may add to what it maps at start (interpreter, numpy, helpers).
    memory_limit_mb: int = 192
    default_deadline_ms: float = 250.0
    # Slack the worker's own watchdog allows over the deadline before it kills a silent process.
    grace_ms: float = 500.0
    start_timeout_secs: float = 30.0

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ConfigError("the sandbox pool needs at least one process")
        if self.memory_limit_mb < 32:
            raise ConfigError("sandbox memory_limit_mb must be at least 32")
        if not 1 <= self.default_deadline_ms <= 60_000:
            raise ConfigError("sandbox default_deadline_ms must be between 1 and 60000")


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """One status byte per symbol (protocol.NO_MATCH / MATCH / FAILED / DECLINED), the failures' messages
    and the reasons the code gave for declining."""

    statuses: bytes
    errors: dict[int, str]
    declined: dict[int, str]


@dataclass(frozen=True, slots=True)
class StepPlan:
    """One symbol at many moments of a replay (the `steps` request, see protocol.py): per step, for each of
    `timeframes`, [start, end, forming] (the window of the snapshot's series; an index into `forming`, the
    candles still forming then as [open time, open, high, low, close, volume], or -1), and its ticker."""

    symbol: str
    timeframes: tuple[str, ...]
    steps: list[dict[str, object]]  # {"w": [[start, end, forming], ...], "t": ticker}
    forming: list[list[float]]


@dataclass(frozen=True, slots=True)
class PoolStats:
    processes: int
    restarts: int
    rss_mb: float


def _outcome(statuses: bytearray, messages: dict[int, str]) -> BatchOutcome:
    errors, declined = {}, {}
    for index, status in enumerate(statuses):
        if status == protocol.FAILED:
            errors[index] = messages.get(index, "check_signal failed")
        elif status == protocol.DECLINED:
            declined[index] = messages.get(index, "")
    return BatchOutcome(bytes(statuses), errors, declined)


class SandboxFailure(Exception):
    """The batch's program was stopped and its process replaced; `reason` says why, for the trader."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SandboxProcess:
    """One running sandbox process and its end of the socket pair."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._process = process
        self._reader = reader
        self._writer = writer
        self._snapshots: OrderedDict[int, str] = OrderedDict()  # generation -> segment, as the child's LRU

    @property
    def pid(self) -> int:
        return self._process.pid

    @classmethod
    async def start(cls, config: SandboxConfig) -> SandboxProcess:
        ours, theirs = socket.socketpair()
        try:
            # A plain Popen, reaped only by terminate(): asyncio's child watcher can race other reapers
            # and then reports every exit as code 255, losing why a process died.
            process = await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, "-I", "-m", "worker.sandbox.child", str(theirs.fileno()),
                 str(config.memory_limit_mb)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=CHILD_ENV, cwd="/", start_new_session=True,
            )  # fmt: skip
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        sandbox = cls(process, reader, writer)
        try:
            async with asyncio.timeout(config.start_timeout_secs):
                first = await sandbox._read_frame()
            if not isinstance(first, protocol.Ready):
                raise protocol.ProtocolViolation("the first frame was not READY")
        except BaseException as error:
            await sandbox.terminate()
            if isinstance(error, asyncio.CancelledError):
                raise
            raise TransientError(f"sandbox process did not start: {await sandbox.exit_reason()}") from error
        return sandbox

    async def run(
        self,
        program: SignalProgram,
        symbols: list[str],
        snapshot: KlineSnapshot,
        deadline_ms: float,
        grace_ms: float,
    ) -> BatchOutcome:
        """Evaluate `program` for `symbols`. On SandboxFailure this process is dead (terminate() done)."""
        request: dict[str, object] = {"op": "check", "symbols": symbols}
        return await self._request(
            program, request, len(symbols), snapshot, deadline_ms=deadline_ms, grace_ms=grace_ms
        )

    async def run_steps(
        self,
        program: SignalProgram,
        plan: StepPlan,
        snapshot: KlineSnapshot,
        deadline_ms: float,
        grace_ms: float,
    ) -> BatchOutcome:
        """Evaluate `program` at every step of `plan` (one status per step), as `run` does."""
        request: dict[str, object] = {
            "op": "steps", "symbol": plan.symbol, "timeframes": list(plan.timeframes), "steps": plan.steps,
            "forming": plan.forming,
        }  # fmt: skip
        count = len(plan.steps)
        return await self._request(
            program, request, count, snapshot, deadline_ms=deadline_ms, grace_ms=grace_ms
        )

    async def _request(
        self,
        program: SignalProgram,
        fields: dict[str, object],
        count: int,
        snapshot: KlineSnapshot,
        *,
        deadline_ms: float,
        grace_ms: float,
    ) -> BatchOutcome:
        request = bytearray()
        if snapshot.generation not in self._snapshots:
            request += protocol.encode_raw_request(snapshot.index_json)
            for old in [old for old, name in self._snapshots.items() if name == snapshot.name]:
                del self._snapshots[old]
            self._snapshots[snapshot.generation] = snapshot.name
            while len(self._snapshots) > protocol.MAX_SNAPSHOTS:
                self._snapshots.popitem(last=False)
        self._snapshots.move_to_end(snapshot.generation)
        request += protocol.encode_request(
            {
                **fields,
                "generation": snapshot.generation,
                "key": program.key,
                "source": program.source,
                "deadline_ms": deadline_ms,
            }
        )
        silence_secs = (deadline_ms + grace_ms) / 1000 + protocol.FLUSH_SECS
        try:
            self._writer.write(request)
            await self._writer.drain()
            return await self._collect(count, silence_secs)
        except SandboxFailure:
            await self.terminate()
            raise
        except TimeoutError:
            await self.terminate()
            raise SandboxFailure(
                f"check_signal ran longer than the {deadline_ms:.0f} ms deadline and did not stop; its "
                "sandbox process was killed"
            ) from None
        except protocol.ProtocolViolation as error:
            await self.terminate()
            raise SandboxFailure(
                f"the sandbox process sent an invalid reply ({error}) and was killed"
            ) from None
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.terminate()
            if self._process.returncode == protocol.EXIT_INTERNAL:
                raise TransientError("the sandbox process failed to set up the batch") from None
            raise SandboxFailure(await self.exit_reason()) from None
        except BaseException:
            await self.terminate()  # cancelled mid-batch: the process's state is unknown
            raise

    async def _collect(self, count: int, silence_secs: float) -> BatchOutcome:
        statuses = bytearray()
        errors: dict[int, str] = {}
        while True:
            async with asyncio.timeout(silence_secs):
                message = await self._read_frame()
            match message:
                case protocol.Error(index=index, message=text) if len(statuses) <= index < count:
                    errors[index] = text
                case protocol.Results(start=start, statuses=chunk) if start == len(statuses):
                    if start + len(chunk) > count:
                        raise protocol.ProtocolViolation("more results than symbols")
                    statuses += chunk
                case protocol.Done(count=done) if done == count == len(statuses):
                    return _outcome(statuses, errors)
                case protocol.Fatal(reason=reason):
                    raise SandboxFailure(reason)
                case _:
                    raise protocol.ProtocolViolation(f"unexpected {type(message).__name__} frame")

    async def _read_frame(self) -> protocol.ChildFrame:
        header = await self._reader.readexactly(protocol.LENGTH.size)
        (length,) = protocol.LENGTH.unpack(header)
        protocol.check_child_length(length)
        return protocol.decode_child_frame(await self._reader.readexactly(length))

    async def terminate(self) -> None:
        """Kill the process (if it still runs), reap it and close the socket."""
        if self._process.poll() is None:
            self._process.kill()
        self._writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(EXIT_WAIT_SECS):
                await self._writer.wait_closed()
        await self._wait()

    async def _wait(self) -> None:
        if self._process.returncode is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self._process.wait, EXIT_WAIT_SECS)

    async def exit_reason(self) -> str:
        """Why the process ended, in words (waits briefly for it to end)."""
        await self._wait()
        code = self._process.returncode
        if code is None:
            return "the sandbox process stopped answering"
        if code < 0:
            if -code == signal.SIGXCPU:
                return "the sandbox process used up its CPU time limit and was stopped"
            if -code == signal.SIGKILL:
                return "the sandbox process was killed"
            return f"the sandbox process crashed ({signal.Signals(-code).name})"
        return f"the sandbox process exited unexpectedly (exit code {code})"

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0


class SandboxPool:
    """`processes` sandbox processes in fixed slots; each symbol always goes to the same slot.

    A batch is split by symbol (a stable hash picks the slot), and the parts run in their slots at the
    same time. So every slot computes the helpers of its own symbols only, once per snapshot however many
    traders ask, and the slots work in parallel. A slot runs one batch at a time.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self._slots: list[SandboxProcess | None] = [None] * self.config.processes
        self._locks = [asyncio.Lock() for _ in self._slots]
        self._ever_started = [False] * len(self._slots)
        self._slot_of: dict[str, int] = {}
        self._restarts = 0
        self._closed = False

    async def start(self) -> None:
        """Start every process not running yet (concurrently). Optional: a batch starts its slot's process
        when it finds none, so a worker can answer /health before its sandboxes are up.

        Raises:
            TransientError: a process could not be started.
        """
        try:
            async with asyncio.TaskGroup() as group:
                for slot in range(len(self._slots)):
                    group.create_task(self._ensure(slot), name=f"sandbox-start-{slot}")
        except BaseExceptionGroup as grouped:
            raise grouped.exceptions[0] from None

    async def aclose(self) -> None:
        self._closed = True
        for slot, process in enumerate(self._slots):
            self._slots[slot] = None
            if process is not None:
                await process.terminate()

    async def __aenter__(self) -> SandboxPool:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    def slot_of(self, symbol: str) -> int:
        slot = self._slot_of.get(symbol)
        if slot is None:  # a stable hash, remembered: a big sweep asks for every symbol of every batch
            slot = self._slot_of[symbol] = zlib.crc32(symbol.encode()) % len(self._slots)
        return slot

    async def run_batch(
        self,
        program: SignalProgram,
        symbols: list[str],
        snapshot: KlineSnapshot,
        deadline_ms: float | None = None,
    ) -> BatchOutcome:
        """Evaluate `program` for `symbols`, each part in the slot its symbols belong to.

        Raises:
            SandboxFailure: the program was stopped (the processes it ran in have been replaced).
            TransientError: no sandbox process could be started.
        """
        if self._closed:
            raise RuntimeError("the sandbox pool is closed")
        if snapshot.closed:
            raise ValueError("the kline snapshot was already closed")
        deadline = self.config.default_deadline_ms if deadline_ms is None else deadline_ms
        parts: dict[int, list[int]] = {}
        for index, symbol in enumerate(symbols):
            parts.setdefault(self.slot_of(symbol), []).append(index)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = {
                    slot: group.create_task(
                        self._run_in_slot(slot, program, [symbols[i] for i in indexes], snapshot, deadline),
                        name=f"sandbox-batch-{slot}",
                    )
                    for slot, indexes in parts.items()
                }
        except BaseExceptionGroup as grouped:
            raise grouped.exceptions[0] from None  # callers expect TransientError etc., not a group
        statuses = bytearray(len(symbols))
        errors: dict[int, str] = {}
        declined: dict[int, str] = {}
        failures = []
        for slot, task in sorted(tasks.items()):
            outcome = task.result()
            if isinstance(outcome, SandboxFailure):
                failures.append(outcome)
                continue
            indexes = parts[slot]
            for position, status in enumerate(outcome.statuses):
                statuses[indexes[position]] = status
            errors.update({indexes[position]: message for position, message in outcome.errors.items()})
            declined.update({indexes[position]: message for position, message in outcome.declined.items()})
        if failures:
            raise failures[0]
        return BatchOutcome(bytes(statuses), dict(sorted(errors.items())), dict(sorted(declined.items())))

    async def run_steps(
        self,
        program: SignalProgram,
        plan: StepPlan,
        snapshot: KlineSnapshot,
        deadline_ms: float | None = None,
    ) -> BatchOutcome:
        """Evaluate `program` at every step of `plan` in the symbol's slot.

        Raises:
            SandboxFailure: the program was stopped (its process has been replaced).
            TransientError: no sandbox process could be started.
        """
        if self._closed:
            raise RuntimeError("the sandbox pool is closed")
        deadline = self.config.default_deadline_ms if deadline_ms is None else deadline_ms
        slot = self.slot_of(plan.symbol)
        async with self._locks[slot]:
            process = await self._ensure_locked(slot)
            try:
                return await process.run_steps(program, plan, snapshot, deadline, self.config.grace_ms)
            except SandboxFailure:
                self._slots[slot] = None
                await self._ensure_locked(slot)
                raise
            except BaseException:
                self._slots[slot] = None
                raise

    async def _run_in_slot(
        self, slot: int, program: SignalProgram, symbols: list[str], snapshot: KlineSnapshot, deadline: float
    ) -> BatchOutcome | SandboxFailure:
        async with self._locks[slot]:
            if snapshot.closed:
                raise ValueError("the kline snapshot was closed while the batch waited for a sandbox")
            process = await self._ensure_locked(slot)
            try:
                return await process.run(program, symbols, snapshot, deadline, self.config.grace_ms)
            except SandboxFailure as failure:
                self._slots[slot] = None
                logger.warning(
                    "sandbox process stopped trader_id=%s pid=%d reason=%s", program.trader_id, process.pid,
                    failure.reason,
                )  # fmt: skip
                await self._ensure_locked(slot)
                return failure
            except BaseException:
                self._slots[slot] = None  # cancelled or our own failure: the next batch starts a new one
                raise

    def stats(self) -> PoolStats:
        """Process count, replacements so far and the processes' total resident memory."""
        processes = [process for process in self._slots if process is not None]
        return PoolStats(len(processes), self._restarts, sum(p.rss_mb() for p in processes))

    @property
    def pids(self) -> list[int]:
        return sorted(process.pid for process in self._slots if process is not None)

    async def _ensure(self, slot: int) -> None:
        async with self._locks[slot]:
            await self._ensure_locked(slot)

    async def _ensure_locked(self, slot: int) -> SandboxProcess:
        process = self._slots[slot]
        if process is None:
            if self._closed:
                raise RuntimeError("the sandbox pool is closed")
            process = await SandboxProcess.start(self.config)
            self._restarts += 1 if self._ever_started[slot] else 0
            self._ever_started[slot] = True
            self._slots[slot] = process
        return process
