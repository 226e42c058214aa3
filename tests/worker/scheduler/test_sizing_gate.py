"""The sizing gate: a burst of traders the machine carries is scheduled at once without asking; one beyond it
is held (nothing scheduled, so nothing swept or backfilled) while scale-machines is asked, with the prediction
in /metrics; `resizing` keeps them held for the restart (scheduled here only if none comes), any other answer
or a failed request schedules them here; held traders paused, updated or removed meanwhile are told to the
scheduler as the sync's protocol expects; none is scheduled once the machine prepares to shut down."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from tests.worker.scheduler.test_trader_sync import RecordingScheduler
from worker.clock import LiveClock
from worker.db.sizing import SizingAnswer
from worker.domain.enums import TraderStatus
from worker.domain.trader import Trader, TraderRisk
from worker.errors import TransientError
from worker.metrics import WorkerMetrics
from worker.scheduler.sizing_gate import ASK_ABOVE_SWEEP_RATIO, SizingGate, SizingGateSettings

SYMBOLS = tuple(f"L{index:03d}USDT" for index in range(200))
CHECK_SECS = 250e-6


def trader(index: int, symbols: tuple[str, ...] = SYMBOLS, **changes: object) -> Trader:
    made = Trader(
        id=uuid.UUID(int=index + 1), user_id=uuid.UUID(int=1), name=f"load {index}", signal_code="-",
        signal_code_version=1, ai_instructions="", timeframes=("1m", "5m", "1h"), check_interval="1m_close",
        reanalysis_interval="1h", symbols=symbols, risk=TraderRisk(Decimal(1000), 3, Decimal(500)),
        status=TraderStatus.ACTIVE, error_message=None, updated_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    return replace(made, **changes)  # type: ignore[arg-type]


class Scheduler(RecordingScheduler):
    def scheduled(self) -> list[Trader]:
        return [self.known[trader_id] for trader_id in self.running]


class Sizing:
    """scale-machines as the gate sees it: each request's answer, and what the worker showed when asked."""

    def __init__(self, scheduler: Scheduler, metrics: WorkerMetrics, answer: SizingAnswer | None) -> None:
        self.answer = answer
        self.asked: list[tuple[float | None, int]] = []  # (/metrics' prediction, traders scheduled) per ask
        self._scheduler, self._metrics = scheduler, metrics

    async def ask(self) -> SizingAnswer:
        self.asked.append((self._metrics.predicted_sweep_ratio, len(self._scheduler.running)))
        if self.answer is None:
            raise TransientError("scale-machines: ConnectError")
        return self.answer


@contextlib.asynccontextmanager
async def running_gate(
    answer: SizingAnswer | None, *, restart_wait_secs: float = 60.0
) -> AsyncIterator[tuple[SizingGate, Scheduler, Sizing, WorkerMetrics]]:
    scheduler, metrics = Scheduler(), WorkerMetrics()
    sizing = Sizing(scheduler, metrics, answer)
    settings = SizingGateSettings(
        SYMBOLS[:1], settle_secs=0.05, recheck_secs=0.1, restart_wait_secs=restart_wait_secs
    )
    gate = SizingGate(
        scheduler, sizing.ask, settings, metrics=metrics, check_cost_secs=lambda: CHECK_SECS,
        market_rate=lambda: 10.0, clock=LiveClock(), cpus=lambda: 1.0,
    )  # fmt: skip
    task = asyncio.create_task(gate.run(), name="sizing-gate-under-test")
    try:
        yield gate, scheduler, sizing, metrics
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until(condition: object, timeout_secs: float = 5.0) -> None:
    async with asyncio.timeout(timeout_secs):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - plain state of the code under test
            await asyncio.sleep(0.01)


async def test_a_burst_the_machine_carries_is_scheduled_at_once_without_asking() -> None:
    async with running_gate(SizingAnswer.RESIZING) as (gate, scheduler, sizing, _):
        for index in range(3):
            await gate.add(trader(index))
        await gate.add(trader(3, status=TraderStatus.PAUSED))

        await _until(lambda: len(scheduler.running) == 3)

    assert sizing.asked == []
    assert [action for action, _ in scheduler.calls] == ["add"] * 4 and not scheduler.violations
    assert gate.predicted_ratio(scheduler.scheduled()) <= ASK_ABOVE_SWEEP_RATIO


async def test_100_traders_x_200_symbols_are_held_while_sizing_is_asked_and_for_the_restart() -> None:
    async with running_gate(SizingAnswer.RESIZING) as (gate, scheduler, sizing, metrics):
        for index in range(100):
            await gate.add(trader(index))

        await _until(lambda: len(sizing.asked) == 3)

        assert {scheduled for _, scheduled in sizing.asked} == {0}, "asked before any trader was scheduled"
        prediction = gate.predicted_ratio(gate.held)  # 20,000 checks x 250 us x 10 / 60 s on one CPU: 0.83
        assert prediction > ASK_ABOVE_SWEEP_RATIO
        assert {shown for shown, _ in sizing.asked} == {prediction}, "/metrics showed it at every ask"
        assert scheduler.calls == [] and len(gate.held) == 100, "held for the bigger machine"
        sizing.answer = SizingAnswer.UNCHANGED
        await _until(lambda: len(scheduler.running) == 100)
        assert metrics.predicted_sweep_ratio is None, "shown only while traders are held"


async def test_without_a_restart_the_held_traders_run_here_once_the_resize_is_over_or_the_wait() -> None:
    async with running_gate(SizingAnswer.RESIZING, restart_wait_secs=60) as (gate, scheduler, sizing, _):
        for index in range(100):
            await gate.add(trader(index))
        await _until(lambda: len(sizing.asked) == 3)
        assert scheduler.calls == [], "asked again while the resize runs"
        sizing.answer = SizingAnswer.COOLDOWN  # it ended without restarting this machine
        await _until(lambda: len(scheduler.running) == 100)

    async with running_gate(SizingAnswer.RESIZING, restart_wait_secs=0.3) as (gate, scheduler, sizing, _):
        for index in range(100):
            await gate.add(trader(index))
        await _until(lambda: len(scheduler.running) == 100)

    assert len(sizing.asked) == 4 and gate.held == [] and not scheduler.violations


async def test_any_other_answer_or_no_answer_runs_the_held_traders_here() -> None:
    for answer in (SizingAnswer.UNCHANGED, SizingAnswer.COOLDOWN, SizingAnswer.RATE_LIMITED, None):
        async with running_gate(answer) as (gate, scheduler, sizing, _):
            for index in range(100):
                await gate.add(trader(index))
            await _until(lambda: len(scheduler.running) == 100)

        assert len(sizing.asked) == 1, answer


async def test_held_traders_paused_updated_or_removed_reach_the_scheduler_as_the_sync_says() -> None:
    async with running_gate(SizingAnswer.COOLDOWN) as (gate, scheduler, _, _):
        await gate.add(trader(0, status=TraderStatus.PAUSED))  # known to the scheduler, not running
        await gate.resume(trader(0))
        for index in range(1, 100):
            await gate.add(trader(index))
        await gate.pause(trader(1, status=TraderStatus.PAUSED))
        await gate.remove(trader(2))
        await gate.update(trader(3, symbols=SYMBOLS[:10]))
        await gate.remove(trader(0))

        await _until(lambda: len(scheduler.running) == 97)

    assert not scheduler.violations, scheduler.violations
    assert ("remove", uuid.UUID(int=1)) in scheduler.calls, "the scheduler knew the resumed trader"
    assert uuid.UUID(int=3) not in scheduler.known, "a held trader removed was never the scheduler's"
    assert scheduler.known[uuid.UUID(int=2)].status is TraderStatus.PAUSED
    assert scheduler.known[uuid.UUID(int=4)].symbols == SYMBOLS[:10], "its latest definition"


async def test_a_machine_shutting_down_schedules_no_held_trader() -> None:
    async with running_gate(SizingAnswer.RESIZING, restart_wait_secs=0.3) as (gate, scheduler, sizing, _):
        for index in range(100):
            await gate.add(trader(index))
        await _until(lambda: len(sizing.asked) == 1)
        await gate.prepare_shutdown()  # scale-machines' /prepare-shutdown before the resize
        await asyncio.sleep(0.6)

        assert scheduler.calls == [] and len(gate.held) == 100
