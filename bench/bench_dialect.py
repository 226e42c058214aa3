"""How much model-style signal code the sandbox accepts: the corpus in tests/worker/sandbox/model_corpus.

A strategy counts as compiled when compile_signal accepts it, and as running when its dry run (three
rounds of recorded candles for three symbols, every timeframe it names, in the sandbox) has no error and
is not stopped. The issue's goal is 99 %.
"""

from __future__ import annotations

import asyncio

from bench.measurement import Measurement
from tests.worker.sandbox.model_corpus import SYMBOLS, strategies, timeframes
from worker.sandbox import SandboxConfig, SandboxPool, SignalCodeError, SignalRunner, SignalRuntimeError
from worker.sandbox.compiler import compile_signal
from worker.sandbox.dry_run import dry_run


async def _measure() -> tuple[int, int, int, list[str]]:
    corpus = strategies()
    compiled = ran = 0
    failures: list[str] = []
    async with SandboxPool(SandboxConfig(processes=2)) as pool:
        runner = SignalRunner(pool)
        for name, code in corpus:
            try:
                program = compile_signal(code, trader_id=name, version=1)
            except SignalCodeError as error:
                failures.append(f"{name}: {error}")
                continue
            compiled += 1
            try:
                report = await dry_run(runner, program, timeframes(code), SYMBOLS)
            except SignalRuntimeError as error:
                failures.append(f"{name}: {error.reason}")
                continue
            if report.ok:
                ran += 1
            else:
                failures.append(f"{name}: {report.problem()}")
    return len(corpus), compiled, ran, failures


def run() -> list[Measurement]:
    total, compiled, ran, failures = asyncio.run(_measure())
    detail = f"{total} strategies" + (f"; first failure {failures[0][:120]}" if failures else "")
    return [
        Measurement("model corpus compiles", 100 * compiled / total, "%", f"{compiled}/{total}"),
        Measurement("model corpus runs without error", 100 * ran / total, "%", detail),
    ]
