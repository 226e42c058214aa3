"""The exchange simulator for feed tests: in this event loop, on a free port, with its own clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from devstack.exchange.data import default_data_dir
from devstack.exchange.server import ExchangeSimulator, SimulatorConfig
from worker.market.recordings import SymbolData, load_directory

# 2025-01-03 03:00 UTC: two days into the 1m recordings.
START_MS = 1_735_873_200_000


@pytest.fixture(scope="session")
def recorded() -> dict[str, SymbolData]:
    return load_directory(default_data_dir())


@pytest_asyncio.fixture(loop_scope="function")
async def fast_simulator(recorded: dict[str, SymbolData]) -> AsyncIterator[ExchangeSimulator]:
    sim = ExchangeSimulator(SimulatorConfig(start_ms=START_MS, speed=120.0, kline_push_secs=0.2), recorded)
    await sim.start()
    yield sim
    await sim.stop()
