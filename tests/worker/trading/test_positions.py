"""A trader's locks: the monitor's exits side by side, a decision alone and before exits asked after it."""

from __future__ import annotations

import asyncio
import uuid

from worker.clock import LiveClock
from worker.trading.config import TradingConfig
from worker.trading.monitor import PositionMonitor
from worker.trading.positions import OpenPositions

TRADER = uuid.uuid4()


def _positions() -> OpenPositions:
    return OpenPositions(PositionMonitor(TradingConfig(), clock=LiveClock(), atr=lambda _symbol: None))


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_exits_go_together_and_a_decision_waits_for_them() -> None:
    positions, events = _positions(), []
    release = asyncio.Event()

    async def exit_(name: str) -> None:
        async with positions.exit_lock(TRADER):
            events.append(f"{name} in")
            await release.wait()
        events.append(f"{name} out")

    async def decision() -> None:
        async with positions.lock(TRADER):
            events.append("decision")

    async with asyncio.TaskGroup() as group:
        group.create_task(exit_("a"))
        group.create_task(exit_("b"))
        await _settle()
        assert events == ["a in", "b in"]
        group.create_task(decision())
        await _settle()
        assert "decision" not in events
        release.set()
    assert events[-1] == "decision"


async def test_a_waiting_decision_goes_before_exits_asked_for_after_it() -> None:
    positions, events = _positions(), []
    first_done = asyncio.Event()

    async def exit_(name: str, until: asyncio.Event | None = None) -> None:
        async with positions.exit_lock(TRADER):
            events.append(name)
            if until is not None:
                await until.wait()

    async def decision() -> None:
        async with positions.lock(TRADER):
            events.append("decision")

    async with asyncio.TaskGroup() as group:
        group.create_task(exit_("first", first_done))
        await _settle()
        group.create_task(decision())
        await _settle()
        group.create_task(exit_("later"))
        await _settle()
        assert events == ["first"]
        first_done.set()
    assert events == ["first", "decision", "later"]


async def test_decisions_are_alone_and_other_traders_are_not_held() -> None:
    positions, inside, most = _positions(), 0, 0
    other_ran = asyncio.Event()

    async def decision() -> None:
        nonlocal inside, most
        async with positions.lock(TRADER):
            inside += 1
            most = max(most, inside)
            await other_ran.wait()
            inside -= 1

    async def other_trader() -> None:
        async with positions.lock(uuid.uuid4()):
            other_ran.set()

    async with asyncio.TaskGroup() as group:
        for _ in range(3):
            group.create_task(decision())
        group.create_task(other_trader())
    assert most == 1


async def test_a_decision_cancelled_while_waiting_holds_no_exit_back() -> None:
    positions, events = _positions(), []
    release = asyncio.Event()

    async def holder() -> None:
        async with positions.exit_lock(TRADER):
            await release.wait()

    async def exit_() -> None:
        async with positions.exit_lock(TRADER):
            events.append("exit")

    async def decision() -> None:
        async with positions.lock(TRADER):
            events.append("decision")

    async with asyncio.TaskGroup() as group:
        group.create_task(holder())
        await _settle()
        waiting = group.create_task(decision())
        await _settle()
        group.create_task(exit_())
        await _settle()
        assert events == []  # held back by the waiting decision
        waiting.cancel()
        release.set()
    assert events == ["exit"]
