"""The sandbox's API for the scheduler: compile a trader's code once per version, evaluate it per sweep.

    runner = SignalRunner(pool, reporter)
    program = await runner.load(trader_id, signal_code_version, signal_code)   # SignalCodeError
    with KlineSnapshot(klines_by_symbol, tickers) as snapshot:                  # once per sweep
        result = await runner.evaluate(program, symbols, snapshot, deadline_ms=250)  # SignalRuntimeError

A trader whose code is rejected or stopped is reported once per code version (`status='error'` with the
reason) and refused from then on without touching a sandbox, until a new version is loaded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from worker.errors import WorkerError
from worker.sandbox import protocol
from worker.sandbox.compiler import ProgramCache, SignalProgram
from worker.sandbox.errors import SignalCodeError, SignalRuntimeError
from worker.sandbox.pool import BatchOutcome, SandboxFailure, SandboxPool, StepPlan
from worker.sandbox.snapshot import KlineSnapshot

logger = logging.getLogger(__name__)


class TraderErrorReporter(Protocol):
    """Tells the trader's owner its code is broken (the worker's is `worker.db.traders.TraderRows`)."""

    async def report_trader_error(self, trader_id: str, message: str) -> None:
        """Mark the trader as failed with a message its owner can act on."""
        ...


@dataclass(frozen=True, slots=True)
class SweepResult:
    """One program over a sweep's symbols: the matches (in the order asked), per-symbol failures, how
    many checks ran, the wall time of the whole evaluation, and the symbols whose check the code declined
    with `raise ValueError("reason")` (not matches, not failures)."""

    matches: list[str]
    errors: dict[str, str]
    checked: int
    duration_ms: float
    declined: dict[str, str] = field(default_factory=dict)


class SignalRunner:
    """Compiles and evaluates traders' signal programs in the sandbox pool, reporting broken ones."""

    def __init__(self, pool: SandboxPool, reporter: TraderErrorReporter | None = None) -> None:
        self._pool = pool
        self._reporter = reporter
        self._programs = ProgramCache()
        self._stopped: dict[tuple[str | None, str], str] = {}  # (trader id, program key) -> why
        self._reported: set[tuple[str, str]] = set()  # (trader id, program key or version) reported
        self._declined: dict[tuple[str | None, str], str] = {}  # (trader id, symbol) -> last reason logged

    async def warm_up(self) -> None:
        """Start the sandbox processes now rather than at the first sweep.

        Raises:
            TransientError: a process could not be started (the next sweep tries again).
        """
        await self._pool.start()

    async def load(self, trader_id: str, version: int, code: str) -> SignalProgram:
        """The trader's program for this code version, compiled on first use.

        Raises:
            SignalCodeError: the code was rejected (the trader has been reported, once per version).
        """
        try:
            return self._programs.get(trader_id, version, code)
        except SignalCodeError as error:
            await self._report(trader_id, f"v{version}", f"signal code rejected: {error}")
            raise

    def forget(self, trader_id: str) -> None:
        """Drop a removed trader's compiled program."""
        self._programs.forget(trader_id)
        for key in [key for key in self._declined if key[0] == trader_id]:
            del self._declined[key]

    async def evaluate(
        self,
        program: SignalProgram,
        symbols: list[str],
        snapshot: KlineSnapshot,
        *,
        deadline_ms: float | None = None,
    ) -> SweepResult:
        """Run `check_signal` for each symbol (duplicates once) on the snapshot's data.

        Symbols the snapshot has no data for are reported in `errors` without running.

        Raises:
            SignalRuntimeError: the program was stopped (deadline, memory, recursion, crash) now or in an
                earlier sweep; the trader has been reported.
        """
        started = time.perf_counter()
        trader = program.trader_id
        stopped = self._stopped.get((program.trader_id, program.key))
        if stopped is not None:
            await self._report(trader, program.key, f"signal code stopped: {stopped}")
            raise SignalRuntimeError(program.trader_id, stopped)
        wanted = list(dict.fromkeys(symbols))
        runnable = [symbol for symbol in wanted if symbol in snapshot.symbols]
        errors = {s: f"no market data for {s}" for s in wanted if s not in snapshot.symbols}
        matches: list[str] = []
        declined: dict[str, str] = {}
        if runnable:
            try:
                outcome = await self._pool.run_batch(program, runnable, snapshot, deadline_ms)
            except SandboxFailure as failure:
                self._stopped[program.trader_id, program.key] = failure.reason
                await self._report(trader, program.key, f"signal code stopped: {failure.reason}")
                raise SignalRuntimeError(program.trader_id, failure.reason) from None
            statuses = zip(runnable, outcome.statuses, strict=True)
            matches = [symbol for symbol, status in statuses if status == protocol.MATCH]
            errors.update({runnable[index]: message for index, message in outcome.errors.items()})
            declined = {runnable[index]: message for index, message in outcome.declined.items()}
            self._log_declined(trader, runnable, declined)
        duration_ms = (time.perf_counter() - started) * 1000
        return SweepResult(matches, errors, len(runnable), duration_ms, declined)

    async def evaluate_steps(
        self,
        program: SignalProgram,
        plan: StepPlan,
        snapshot: KlineSnapshot,
        *,
        deadline_ms: float | None = None,
    ) -> BatchOutcome:
        """Run `check_signal` at every step of a replay (`plan`): one status per step, as `evaluate`.

        Raises:
            SignalRuntimeError: the program was stopped (deadline, memory, recursion, crash).
        """
        stopped = self._stopped.get((program.trader_id, program.key))
        if stopped is not None:
            raise SignalRuntimeError(program.trader_id, stopped)
        try:
            return await self._pool.run_steps(program, plan, snapshot, deadline_ms)
        except SandboxFailure as failure:
            self._stopped[program.trader_id, program.key] = failure.reason
            await self._report(program.trader_id, program.key, f"signal code stopped: {failure.reason}")
            raise SignalRuntimeError(program.trader_id, failure.reason) from None

    def _log_declined(self, trader_id: str | None, symbols: list[str], declined: dict[str, str]) -> None:
        """Log each (trader, symbol)'s reason when it changes, not on every sweep."""
        for symbol in symbols:
            reason = declined.get(symbol)
            key = (trader_id, symbol)
            if reason is None:
                self._declined.pop(key, None)
            elif self._declined.get(key) != reason:
                self._declined[key] = reason
                logger.info("check declined trader_id=%s symbol=%s reason=%s", trader_id, symbol, reason)

    async def _report(self, trader_id: str | None, what: str, message: str) -> None:
        """Report once per (trader, code version); a failed report is tried again on the next call."""
        if self._reporter is None or trader_id is None or (trader_id, what) in self._reported:
            return
        try:
            await self._reporter.report_trader_error(trader_id, message)
        except WorkerError as error:
            logger.warning("could not report trader error trader_id=%s error=%s", trader_id, error)
            return
        self._reported.add((trader_id, what))
        logger.info("trader reported as failed trader_id=%s reason=%s", trader_id, message)
