"""A backtest's signal checks: every check moment of a symbol evaluated in the sandbox beforehand (one
request per symbol, worker/sandbox `steps`), then answered moment by moment to the signal run.

This is sound because check_signal sees nothing but its arguments and keeps no state from one check to
the next (the sandbox's contract), and each moment's arguments hold only what a live run had then.
"""

from __future__ import annotations

import ast
import asyncio
import uuid
from collections.abc import Callable, Sequence

from worker.backtest.market import BacktestMarket
from worker.domain.trader import Trader
from worker.domain.universe import trader_timeframes
from worker.errors import InvariantViolation
from worker.market.store import DEFAULT_CAPACITY
from worker.sandbox import KlineSnapshot, SignalProgram, SignalRunner, SweepResult, protocol
from worker.signals.snapshots import KlineKey

# How many moments go to a sandbox at once (a progress report between requests).
STEPS_PER_REQUEST = 5000


def reads_ticker(source: str) -> bool:
    """Whether check_signal may read its ticker: the name of its second parameter appears anywhere in the
    code. The sandbox allows no introspection (locals, vars, frames): a name never written is never read."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "check_signal":
            parameters = [*node.args.posonlyargs, *node.args.args]
            if len(parameters) < 2 or node.args.vararg is not None:
                return True
            name = parameters[1].arg
            return any(isinstance(found, ast.Name) and found.id == name for found in ast.walk(tree))
    return True


class ReplayChecks:
    """Implements worker.signals.checks.SignalChecks for a backtest (answers at `now_ms()`)."""

    def __init__(
        self,
        runner: SignalRunner,
        market: BacktestMarket,
        now_ms: Callable[[], int],
        *,
        capacity: int = DEFAULT_CAPACITY,
        deadline_ms: float | None = None,
    ) -> None:
        self._runner = runner
        self._market = market
        self._now_ms = now_ms
        self._capacity = capacity
        self._deadline_ms = deadline_ms
        self._results: dict[tuple[str, int], tuple[int, str | None]] = {}

    async def warm_up(self) -> None:
        await self._runner.warm_up()

    async def load(self, trader: Trader) -> SignalProgram:
        return await self._runner.load(str(trader.id), trader.signal_code_version, trader.signal_code)

    def forget(self, trader_id: uuid.UUID) -> None:
        self._runner.forget(str(trader_id))

    async def evaluate(
        self,
        trader: Trader,
        symbols: Sequence[str],
        times: Sequence[int],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Run the trader's check_signal for each symbol at each of `times` (raises SignalCodeError,
        SignalRuntimeError); `progress` hears how many moments are done, as they are."""
        program = await self.load(trader)
        timeframes = trader_timeframes(trader)
        with_ticker = reads_ticker(program.source)

        async def one(symbol: str) -> None:
            for first in range(0, len(times), STEPS_PER_REQUEST):
                chunk = times[first : first + STEPS_PER_REQUEST]
                full, plan = self._market.plan(
                    symbol, timeframes, chunk, self._capacity, with_ticker=with_ticker
                )
                with KlineSnapshot({symbol: full}) as snapshot:
                    outcome = await self._runner.evaluate_steps(
                        program, plan, snapshot, deadline_ms=self._deadline_ms
                    )
                for index, at_ms in enumerate(chunk):
                    message = outcome.errors.get(index) or outcome.declined.get(index)
                    self._results[symbol, at_ms] = (outcome.statuses[index], message)
                if progress is not None:
                    progress(len(chunk))

        async with asyncio.TaskGroup() as group:
            for symbol in dict.fromkeys(symbols):
                group.create_task(one(symbol), name=f"backtest-checks-{symbol}")

    def acting_moments(self) -> list[int]:
        """The moments at which check_signal did anything but say no for some symbol (a match, an error, a
        decline): at every other moment the signal run would do nothing, so the replay skips it."""
        return sorted(
            {at_ms for (_, at_ms), (status, _) in self._results.items() if status != protocol.NO_MATCH}
        )

    async def sweep(
        self,
        program: SignalProgram,
        symbols: list[str],
        needed: Sequence[KlineKey],
        *,
        fresh_after: float,
        deadline_ms: float | None,
    ) -> SweepResult:
        at_ms = self._now_ms()
        matches: list[str] = []
        errors: dict[str, str] = {}
        declined: dict[str, str] = {}
        for symbol in dict.fromkeys(symbols):
            found = self._results.get((symbol, at_ms))
            if found is None:
                raise InvariantViolation(f"no check was evaluated for {symbol} at {at_ms}")
            status, message = found
            if status == protocol.MATCH:
                matches.append(symbol)
            elif status == protocol.FAILED:
                errors[symbol] = message or "check_signal failed"
            elif status == protocol.DECLINED:
                declined[symbol] = message or ""
        return SweepResult(matches, errors, len(dict.fromkeys(symbols)), 0.0, declined)
