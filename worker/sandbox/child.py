"""The sandbox process (`python -I -m worker.sandbox.child FD MEMORY_LIMIT_MB`): runs signal programs.

It starts from a clean environment (no secrets), limits itself (address space, CPU, no new processes,
no files, no core dumps), then serves requests from the worker on the inherited socket: a `snapshot`
request maps a sweep's klines read-only; a `check` request evaluates one program for a list of symbols,
streaming results back. Each check runs under a CPU-time deadline (SIGPROF): signal code cannot catch
the exception it raises (a BaseException, and the compiler lets code catch only arithmetic, lookup,
value and type errors). `raise ValueError("reason")` in signal code declines the check: False, with the
reason sent back to be logged. Anything that means the process
may be unhealthy (deadline, memory, recursion) is reported as FATAL and the process exits; the worker
starts a new one. The worker also watches from outside and kills a process that stops answering.

Within one snapshot, work is done once: helper results are shared by every program (worker.sandbox.memo),
and traders running identical code (same program key and deadline) share each symbol's result, since
signal code sees nothing but its arguments and keeps no state from one check to the next. A `steps`
request (a backtest) runs one program over one symbol at many moments: each step gets copies of the
candles it may see, so nothing after its moment is within the code's reach.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import signal
import socket
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from types import FrameType, FunctionType, MappingProxyType, TracebackType
from typing import Any

import numpy as np

from worker.market.klines import Klines
from worker.sandbox import protocol
from worker.sandbox.compiler import FILENAME, HELPER_NAMES, compile_signal
from worker.sandbox.errors import SignalCodeError
from worker.sandbox.guards import Declined, freeze_module_constants, program_globals
from worker.sandbox.memo import Memo, memoising_helpers
from worker.sandbox.snapshot import SnapshotReader

RECURSION_LIMIT = 400  # well inside the C stack even when every level goes through a builtin
MESSAGE_FORMAT_SECS = 0.05  # formatting an exception's message gets its own small deadline
MAX_PROGRAMS = 128
MAX_SHARED_RESULTS = 20_000  # per snapshot: 100 distinct programs x 200 symbols


class CheckDeadline(BaseException):
    """Raised from SIGPROF inside signal code; a BaseException so nothing on the way mistakes it."""


class ProgramStopped(Exception):
    """The program must not run on: the reason goes to the worker as FATAL."""


def _on_deadline(signum: int, frame: FrameType | None) -> None:
    raise CheckDeadline


def _arm(secs: float) -> None:
    signal.setitimer(signal.ITIMER_PROF, secs)


def _disarm() -> None:
    signal.setitimer(signal.ITIMER_PROF, 0)


def limit_resources(memory_limit_mb: int) -> None:
    """Cap this process: address space = what is mapped now + `memory_limit_mb`, and no fork/files/cores."""
    mapped_bytes = _mapped_bytes()
    address_space = mapped_bytes + memory_limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))
    # Counts processes per user, so it only stops forking where the sandbox runs as its own uid; it is
    # ignored for root. The compiler and the namespace are what keep fork out of reach.
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    sys.setrecursionlimit(RECURSION_LIMIT)
    signal.signal(signal.SIGPROF, _on_deadline)


def _mapped_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def _cpu_secs() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _limit_cpu(budget_secs: float) -> None:
    # A backstop behind the parent's watchdog: SIGXCPU kills the process if a batch overruns its budget.
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(_cpu_secs() + budget_secs)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _signal_line(trace: TracebackType | None) -> int | None:
    line = None
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == FILENAME:
            line = trace.tb_lineno
        trace = trace.tb_next
    return line


def _message(error: BaseException) -> str:
    _arm(MESSAGE_FORMAT_SECS)  # str() of a huge value would otherwise run without a deadline
    try:
        return str(error)[: protocol.MAX_MESSAGE_CHARS]
    except CheckDeadline:
        return ""
    except Exception:  # a message argument whose str() fails
        return "(the message could not be shown)"
    finally:
        _disarm()


def _describe(error: BaseException) -> str:
    line = _signal_line(error.__traceback__)
    name = type(error).__name__
    detail = _message(error)
    text = f"{name}: {detail}" if detail else name
    return protocol.clip(f"line {line}: {text}" if line is not None else text)


class Sandbox:
    """The request loop of one sandbox process."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection
        self._snapshots: OrderedDict[int, SnapshotReader] = OrderedDict()
        self._programs: OrderedDict[str, FunctionType] = OrderedDict()
        self._memo: Memo = {}
        # Programs call the memoising helpers; the memo in use is the snapshot's own (see SnapshotReader).
        self._helpers = memoising_helpers(HELPER_NAMES, lambda: self._memo)

    def serve(self) -> None:
        self._connection.sendall(protocol.frame(protocol.READY))
        while True:
            body = self._receive()
            if body is None:
                return
            try:
                request = protocol.decode_request(body)
                if request["op"] == "snapshot":
                    self._attach(request)
                    continue
                if request["op"] == "steps":
                    steps = self._replay_steps(request)
                elif request["op"] != "check":
                    raise ValueError(f"unknown request {request['op']!r}")
            except Exception:
                # Our side's failure (say the snapshot was already removed): not the program's fault.
                self._connection.close()
                os._exit(protocol.EXIT_INTERNAL)
            if request["op"] == "steps":
                self._steps(request, steps)
            else:
                self._check(request)

    def _receive(self) -> bytes | None:
        header = self._read_exactly(protocol.LENGTH.size)
        if header is None:
            return None
        (length,) = protocol.LENGTH.unpack(header)
        if length > protocol.MAX_REQUEST_BYTES:
            raise ValueError("request too large")
        return self._read_exactly(length)

    def _read_exactly(self, count: int) -> bytes | None:
        chunks = bytearray()
        while len(chunks) < count:
            chunk = self._connection.recv(min(count - len(chunks), 1 << 20))
            if not chunk:
                return None
            chunks += chunk
        return bytes(chunks)

    def _attach(self, request: dict[str, Any]) -> None:
        generation = int(request["generation"])
        if generation not in self._snapshots:
            reader = SnapshotReader(request)
            # The worker writes a segment again only once its snapshot is closed: an older generation in
            # the same segment is never asked about again, and its pages would be counted twice.
            for old in [old for old, mapped in self._snapshots.items() if mapped.name == reader.name]:
                del self._snapshots[old]
            self._memo = {}
            self._snapshots[generation] = reader
            while len(self._snapshots) > protocol.MAX_SNAPSHOTS:
                self._snapshots.popitem(last=False)
        self._snapshots.move_to_end(generation)

    def _check(self, request: dict[str, Any]) -> None:
        symbols: list[str] = request["symbols"]
        deadline_secs = float(request["deadline_ms"]) / 1000
        snapshot = self._snapshot(request)
        self._memo = snapshot.memo
        results = snapshot.results

        def outcomes(check_signal: FunctionType) -> Iterator[tuple[int, str | None]]:
            for symbol in symbols:
                key = (request["key"], deadline_secs, symbol)
                outcome = results.get(key)
                if outcome is None:
                    klines, ticker = snapshot.klines(symbol), snapshot.ticker(symbol)
                    outcome = self._run_one(check_signal, symbol, klines, ticker, deadline_secs)
                    if len(results) < MAX_SHARED_RESULTS:
                        results[key] = outcome
                yield outcome

        self._stream(request, len(symbols), outcomes)

    def _replay_steps(self, request: dict[str, Any]) -> Callable[[int], tuple[Mapping[str, Klines], Any]]:
        """Each step's `klines` and `ticker`, built when it runs: a copy of the snapshot's window with the
        forming candle appended, so the code holds no view of the candles after its moment. The windows
        are checked here, before any code runs."""
        snapshot = self._snapshot(request)
        full = snapshot.klines(request["symbol"])
        timeframes: list[str] = request["timeframes"]
        forming: list[list[float]] = request["forming"]
        steps: list[dict[str, Any]] = request["steps"]
        for step in steps:
            for timeframe, (start, end, candle) in zip(timeframes, step["w"], strict=True):
                if not (0 <= start <= end <= len(full[timeframe]) and -1 <= candle < len(forming)):
                    raise ValueError(f"step window out of range for {timeframe}")

        def build(index: int) -> tuple[Mapping[str, Klines], Any]:
            step = steps[index]
            klines = {
                timeframe: _window(full[timeframe], start, end, forming[candle] if candle >= 0 else None)
                for timeframe, (start, end, candle) in zip(timeframes, step["w"], strict=True)
            }
            return MappingProxyType(klines), MappingProxyType(step["t"])

        return build

    def _steps(
        self, request: dict[str, Any], build: Callable[[int], tuple[Mapping[str, Klines], Any]]
    ) -> None:
        symbol, deadline_secs = request["symbol"], float(request["deadline_ms"]) / 1000
        count = len(request["steps"])

        def outcomes(check_signal: FunctionType) -> Iterator[tuple[int, str | None]]:
            for index in range(count):
                klines, ticker = build(index)
                self._memo = {}  # helper results belong to this step's series only
                yield self._run_one(check_signal, symbol, klines, ticker, deadline_secs)

        self._stream(request, count, outcomes)

    def _snapshot(self, request: dict[str, Any]) -> SnapshotReader:
        snapshot = self._snapshots[int(request["generation"])]
        self._snapshots.move_to_end(snapshot.generation)  # the worker mirrors this LRU exactly
        return snapshot

    def _stream(
        self,
        request: dict[str, Any],
        count: int,
        outcomes: Callable[[FunctionType], Iterator[tuple[int, str | None]]],
    ) -> None:
        """Run the request's program over `count` items; statuses are sent every FLUSH_SECS at least."""
        deadline_secs = float(request["deadline_ms"]) / 1000
        _limit_cpu(deadline_secs * (count + 1) + 2.0)
        index = 0
        try:
            check_signal = self._program(request["key"], request["source"], deadline_secs)
            out = bytearray()
            statuses = bytearray()
            start = 0
            last_flush = time.perf_counter()
            for index, (status, message) in enumerate(outcomes(check_signal)):
                if message is not None:
                    out += protocol.encode_error(index, message)
                statuses.append(status)
                now = time.perf_counter()
                if now - last_flush >= protocol.FLUSH_SECS:
                    out += protocol.encode_results(start, bytes(statuses))
                    self._connection.sendall(out)
                    out.clear()
                    statuses.clear()
                    start, last_flush = index + 1, now
            out += protocol.encode_results(start, bytes(statuses)) + protocol.encode_done(count)
            self._connection.sendall(out)
        except ProgramStopped as stopped:
            self._connection.sendall(protocol.encode_fatal(index, str(stopped)))
            self._connection.close()
            os._exit(protocol.EXIT_FATAL)

    def _program(self, key: str, source: str, deadline_secs: float) -> FunctionType:
        check_signal = self._programs.get(key)
        if check_signal is not None:
            self._programs.move_to_end(key)
            return check_signal
        try:
            program = compile_signal(source, key=key)
        except SignalCodeError as error:
            raise ProgramStopped(f"signal code was rejected: {error}") from None
        namespace = program_globals(self._helpers)
        prepared = set(namespace)
        _arm(deadline_secs)
        try:
            exec(program.code, namespace)  # noqa: S102 (restricted code, restricted namespace)
        except CheckDeadline:
            raise ProgramStopped(
                f"module-level code ran longer than the {deadline_secs * 1000:.0f} ms deadline"
            ) from None
        except (MemoryError, RecursionError) as error:
            raise ProgramStopped(f"module-level code failed: {type(error).__name__}") from None
        except Exception as error:
            raise ProgramStopped(f"module-level code failed: {_describe(error)}") from None
        finally:
            _disarm()
        freeze_module_constants(namespace, set(namespace) - prepared)
        check_signal = namespace.get("check_signal")
        if type(check_signal) is not FunctionType:
            raise ProgramStopped("check_signal is not a function")
        self._programs[key] = check_signal
        while len(self._programs) > MAX_PROGRAMS:
            self._programs.popitem(last=False)
        return check_signal

    def _run_one(
        self,
        check_signal: FunctionType,
        symbol: str,
        klines: Mapping[str, Klines],
        ticker: Mapping[str, Any],
        deadline_secs: float,
    ) -> tuple[int, str | None]:
        _arm(deadline_secs)
        try:
            result = check_signal(symbol, ticker, klines)
        except CheckDeadline:
            raise ProgramStopped(
                f"check_signal ran longer than the {deadline_secs * 1000:.0f} ms deadline"
                f" (stopped while checking {symbol})"
            ) from None
        except MemoryError:
            raise ProgramStopped(f"check_signal used too much memory (checking {symbol})") from None
        except RecursionError as error:
            raise ProgramStopped(
                f"check_signal recursed too deeply ({_describe(error)}, checking {symbol})"
            ) from None
        except Declined as declined:
            return protocol.DECLINED, protocol.clip(_message(declined)) or "declined (no reason given)"
        except Exception as error:
            return protocol.FAILED, _describe(error)
        finally:
            _disarm()
        if result is True or result is False or type(result) is np.bool_:
            return (protocol.MATCH if result else protocol.NO_MATCH), None
        return protocol.FAILED, f"check_signal returned {type(result).__name__}, expected True or False"


def _window(series: Klines, start: int, end: int, forming: list[float] | None) -> Klines:
    """Candles [start, end) of `series`, copied, with the forming candle (open time, OHLCV) after them."""
    times = np.array(series.open_time[start:end])
    values = [np.array(array[start:end]) for array in (series.open, series.high, series.low, series.close,
                                                        series.volume)]  # fmt: skip
    if forming is not None:
        times = np.append(times, np.int64(forming[0]))
        values = [np.append(array, forming[position + 1]) for position, array in enumerate(values)]
    for array in (times, *values):
        array.flags.writeable = False
    open_, high, low, close, volume = values
    return Klines(times, open_, high, low, close, volume, closed=forming is None)


def main(argv: list[str]) -> int:
    descriptor, memory_limit_mb = int(argv[1]), int(argv[2])
    connection = socket.socket(fileno=descriptor)
    limit_resources(memory_limit_mb)
    try:
        Sandbox(connection).serve()
    except BrokenPipeError:
        return 0  # the worker went away
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
