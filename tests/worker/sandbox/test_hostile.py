"""The hostile corpus at run time: each attack that compiles is stopped or fails, and nothing else notices."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.worker.sandbox.conftest import RecordingReporter, btc_windows
from tests.worker.sandbox.hostile import SNIPPETS, Outcome, body
from worker.sandbox import (
    KlineSnapshot,
    SandboxConfig,
    SandboxPool,
    SignalRunner,
    SignalRuntimeError,
    SweepResult,
    compile_signal,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

RUN_TIME = [snippet for snippet in SNIPPETS if snippet.outcome is not Outcome.REJECTED]
CANARY = body("closes = get_closes(klines['1h'])", "return closes[-1] > closes[-2]")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool() -> AsyncIterator[SandboxPool]:
    config = SandboxConfig(processes=2, default_deadline_ms=150, grace_ms=400, memory_limit_mb=160)
    async with SandboxPool(config) as sandbox_pool:
        yield sandbox_pool


async def test_run_time_attacks_are_stopped_while_other_traders_keep_signalling(pool: SandboxPool) -> None:
    klines = btc_windows(8)
    symbols = list(klines)
    expected = [s for s in symbols if klines[s]["1h"].close[-1] > klines[s]["1h"].close[-2]]
    assert 0 < len(expected) < len(symbols)  # the canary can tell a right answer from a wrong one
    reporter = RecordingReporter()
    runner = SignalRunner(pool, reporter)
    hostile = [compile_signal(s.code, trader_id=f"hostile-{i}", version=1) for i, s in enumerate(RUN_TIME)]
    canaries = [compile_signal(CANARY, trader_id=f"canary-{i}", version=1) for i in range(len(hostile))]
    restarts_before = pool.stats().restarts

    with KlineSnapshot(klines) as snapshot:
        # Every hostile trader runs in the same sweep, each next to a well-behaved one.
        interleaved = [p for pair in zip(hostile, canaries, strict=True) for p in pair]
        outcomes = await asyncio.gather(
            *(runner.evaluate(p, symbols, snapshot) for p in interleaved), return_exceptions=True
        )
        hostile_outcomes, canary_outcomes = outcomes[0::2], outcomes[1::2]

        for snippet, outcome in zip(RUN_TIME, hostile_outcomes, strict=True):
            trader = f"hostile-{RUN_TIME.index(snippet)}"
            if snippet.outcome is Outcome.STOPPED:
                assert isinstance(outcome, SignalRuntimeError), f"{snippet.name}: {outcome!r}"
                assert re.search(snippet.reason, outcome.reason), f"{snippet.name}: {outcome.reason}"
                assert reporter.reports[trader] == [f"signal code stopped: {outcome.reason}"]
            elif snippet.outcome is Outcome.CONTAINED:
                assert isinstance(outcome, SweepResult), f"{snippet.name}: {outcome!r}"
                assert (outcome.matches, outcome.errors) == ([], {}), f"{snippet.name}: {outcome}"
                assert outcome.checked == len(symbols), snippet.name
                if snippet.reason:
                    assert set(outcome.declined) == set(symbols), f"{snippet.name}: {outcome}"
                    assert all(re.search(snippet.reason, r) for r in outcome.declined.values()), outcome
                else:
                    assert outcome.declined == {}, f"{snippet.name}: {outcome}"
                assert trader not in reporter.reports
            else:
                assert isinstance(outcome, SweepResult), f"{snippet.name}: {outcome!r}"
                assert outcome.matches == [] and set(outcome.errors) == set(symbols), snippet.name
                assert all(re.search(snippet.reason, e) for e in outcome.errors.values()), outcome.errors
                assert trader not in reporter.reports
        for outcome in canary_outcomes:
            assert isinstance(outcome, SweepResult)
            assert (outcome.matches, outcome.errors, outcome.checked) == (expected, {}, len(symbols))
        assert not any(trader.startswith("canary") for trader in reporter.reports)

        stopped = sum(snippet.outcome is Outcome.STOPPED for snippet in RUN_TIME)
        stats = pool.stats()
        assert stats.processes == 2 and stats.restarts - restarts_before >= stopped
        # The shared klines were not changed by the attempts to write them.
        again = await runner.evaluate(canaries[0], symbols, snapshot)
        assert again.matches == expected

        # A stopped trader is refused at once from then on, without costing a process.
        with pytest.raises(SignalRuntimeError, match="deadline"):
            await runner.evaluate(hostile[[s.name for s in RUN_TIME].index("while True")], symbols, snapshot)
        assert pool.stats().restarts == stats.restarts
