"""Every model-style strategy compiles and runs on recorded candles in the sandbox without an error."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.worker.sandbox.model_corpus import SYMBOLS, strategies, timeframes
from worker.sandbox import SandboxConfig, SandboxPool, SignalRunner, compile_signal
from worker.sandbox.dry_run import dry_run

CORPUS = strategies()


def test_the_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 40
    used = {timeframe for _, code in CORPUS for timeframe in timeframes(code)}
    assert len(used) >= 10
    assert sum(len(timeframes(code)) > 1 for _, code in CORPUS) >= 5  # multi-timeframe strategies
    assert any("precio" in code for _, code in CORPUS)  # one written in Spanish


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runner() -> AsyncIterator[SignalRunner]:
    async with SandboxPool(SandboxConfig(processes=2)) as pool:
        yield SignalRunner(pool)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("name", "code"), CORPUS, ids=[name for name, _ in CORPUS])
async def test_strategy_compiles_and_runs_on_recorded_candles(
    runner: SignalRunner, name: str, code: str
) -> None:
    program = compile_signal(code, trader_id=name, version=1)

    report = await dry_run(runner, program, timeframes(code), SYMBOLS)

    assert report.errors == {}, report.problem()
    assert report.checks == 3 * len(SYMBOLS)
