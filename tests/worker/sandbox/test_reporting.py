"""Broken traders reach the database: the runner reports rejected and runaway code as the machine."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.factories import AppUser, create_trader, trader_state
from tests.worker.sandbox.conftest import btc_windows
from tests.worker.sandbox.hostile import body
from worker.db.traders import TraderRows
from worker.sandbox import (
    KlineSnapshot,
    SandboxConfig,
    SandboxPool,
    SignalCodeError,
    SignalRunner,
    SignalRuntimeError,
)


async def test_rejected_and_runaway_code_marks_only_those_traders(
    reporter: TraderRows, db: psycopg.Connection[Any], user: AppUser
) -> None:
    rejected, runaway, healthy = (
        create_trader(db, user, name) for name in ("rejected", "runaway", "healthy")
    )
    klines = btc_windows(3)

    async with SandboxPool(SandboxConfig(processes=2, default_deadline_ms=100)) as pool:
        runner = SignalRunner(pool, reporter)
        with pytest.raises(SignalCodeError):
            await runner.load(str(rejected), 1, body("import os", "return False"))
        looping = await runner.load(str(runaway), 1, body("while True:", "    pass"))
        fine = await runner.load(str(healthy), 1, body("return True"))
        with KlineSnapshot(klines) as snapshot:
            with pytest.raises(SignalRuntimeError):
                await runner.evaluate(looping, list(klines), snapshot)
            result = await runner.evaluate(fine, list(klines), snapshot)

    assert trader_state(db, rejected) == (
        "error",
        "signal code rejected: line 2: imports are not allowed: math is already available; numpy is not "
        "importable in signal code (there is no np): the kline fields are numpy arrays already, so use their "
        "methods (closes[-20:].mean(), .std(), .max(), .argmax()) or the helpers",
    )
    assert trader_state(db, runaway) == (
        "error",
        f"signal code stopped: check_signal ran longer than the 100 ms deadline (stopped while checking "
        f"{next(iter(klines))})",
    )
    assert trader_state(db, healthy) == ("active", None)
    assert result.matches == list(klines)
