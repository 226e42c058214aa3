"""How the signal run gets a program's verdict over symbols: live, one shared-memory snapshot of the stores
per sweep; a backtest answers from a replay it evaluated beforehand (worker/backtest/checks.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from worker.domain.trader import Trader
from worker.sandbox import SignalProgram, SignalRunner, SweepResult
from worker.signals.snapshots import KlineKey, SnapshotSource


class SignalChecks(Protocol):
    async def warm_up(self) -> None:
        """Start the sandbox processes now rather than at the first sweep (raises TransientError)."""
        ...

    async def load(self, trader: Trader) -> SignalProgram:
        """The trader's compiled program (raises SignalCodeError, reported once per code version)."""
        ...

    def forget(self, trader_id: uuid.UUID) -> None:
        """Drop what is kept for a removed trader."""
        ...

    async def sweep(
        self,
        program: SignalProgram,
        symbols: list[str],
        needed: Sequence[KlineKey],
        *,
        fresh_after: float,
        deadline_ms: float | None,
    ) -> SweepResult:
        """`check_signal` over `symbols` on the data of this moment (raises SignalRuntimeError,
        TransientError)."""
        ...


class SnapshotChecks:
    """The live checks: a snapshot at least as fresh as `fresh_after`, evaluated in the sandbox pool."""

    def __init__(self, runner: SignalRunner, snapshots: SnapshotSource) -> None:
        self._runner = runner
        self._snapshots = snapshots

    async def warm_up(self) -> None:
        await self._runner.warm_up()

    async def load(self, trader: Trader) -> SignalProgram:
        return await self._runner.load(str(trader.id), trader.signal_code_version, trader.signal_code)

    def forget(self, trader_id: uuid.UUID) -> None:
        self._runner.forget(str(trader_id))

    async def sweep(
        self,
        program: SignalProgram,
        symbols: list[str],
        needed: Sequence[KlineKey],
        *,
        fresh_after: float,
        deadline_ms: float | None,
    ) -> SweepResult:
        async with self._snapshots.lease(fresh_after, needed) as snapshot:
            return await self._runner.evaluate(program, symbols, snapshot, deadline_ms=deadline_ms)
