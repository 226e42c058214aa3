"""Newly active traders wait until the machine is known to carry them: the scheduler's front door.

A trader arriving (added, or resumed) is held, not scheduled: no series subscribed, no backfill, no sweep.
Once the trader sync has been quiet for `settle_secs` (a burst of inserts arrives as one set), the gate
predicts the sweep ratio every trader would take on this machine (load.predicted_sweep_ratio, at what a
check costs here). Within what scale-machines leaves alone, the held traders are scheduled at once.
Beyond it, the gate publishes the prediction in /metrics and asks scale-machines to size this machine now:
- `resizing`: the machine is about to restart at a bigger size (Fly applies a new guest size by restarting
  the machine), and the restarted worker runs the traders it finds. They stay held here, asked again every
  `recheck_secs` while no restart came: a resize that ended without one (refused at Fly's lease) answers
  otherwise, and so does none after `restart_wait_secs`; then they are scheduled here.
- anything else (the size carries it, the tier's bound, the cooldown, no answer): they are scheduled here.
So a machine never sweeps for more than its predicted capacity before the scaler has answered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

from worker.clock import Clock
from worker.components import ComponentState
from worker.db.sizing import SizingAnswer
from worker.domain.intervals import parse_interval
from worker.domain.trader import Trader
from worker.domain.universe import trader_symbols
from worker.errors import ConfigError, InvariantViolation, WorkerError
from worker.load import predicted_sweep_ratio
from worker.metrics import WorkerMetrics
from worker.scheduler.trader_sync import TraderScheduler

logger = logging.getLogger(__name__)

# scale-machines scales up past 80% use, a sweep at half its interval counting as full CPU (sizing.ts).
ASK_ABOVE_SWEEP_RATIO: Final = 0.8 * 0.5


@dataclass(frozen=True, slots=True)
class SizingGateSettings:
    default_symbols: tuple[str, ...]
    settle_secs: float = 0.25
    # While a resize is under way: how often to ask again (scale-machines evaluates a machine once per 30 s),
    # and how long at most to wait for the restart (longer than its lease, health gate and rollback take).
    recheck_secs: float = 31.0
    restart_wait_secs: float = 300.0


class Scheduled(TraderScheduler, Protocol):
    def scheduled(self) -> list[Trader]: ...


class SizingGate:
    """A TraderScheduler in front of the scheduler that holds arriving traders until sizing allows them;
    a Component (its run() decides)."""

    name = "sizing-gate"

    def __init__(
        self,
        scheduler: Scheduled,
        ask: Callable[[], Awaitable[SizingAnswer]],
        settings: SizingGateSettings,
        *,
        metrics: WorkerMetrics,
        check_cost_secs: Callable[[], float],
        market_rate: Callable[[], float],
        clock: Clock,
        cpus: Callable[[], float] = lambda: float(len(os.sched_getaffinity(0))),
    ) -> None:
        self._scheduler = scheduler
        self._ask = ask
        self._settings = settings
        self._metrics = metrics
        self._check_cost_secs = check_cost_secs
        self._market_rate = market_rate
        self._cpus = cpus
        self._clock = clock
        # Held traders, each with how it arrived: the scheduler is told the same once it may run them.
        self._held: dict[uuid.UUID, tuple[Trader, Callable[[Trader], Awaitable[None]]]] = {}
        self._arrived = asyncio.Event()
        self._state = ComponentState.STARTING
        self.answers: list[SizingAnswer] = []

    @property
    def held(self) -> list[Trader]:
        return [trader for trader, _ in self._held.values()]

    def state(self) -> ComponentState:
        return self._state

    async def prepare_shutdown(self) -> None:
        """Schedule no held trader from here (a resize's restart, or the next start, runs them)."""
        self._state = ComponentState.STOPPED

    # TraderScheduler ---------------------------------------------------------------------------------
    async def add(self, trader: Trader) -> None:
        if trader.is_active:
            self._hold(trader, self._scheduler.add)
        else:
            await self._scheduler.add(trader)

    async def resume(self, trader: Trader) -> None:
        self._hold(trader, self._scheduler.resume)

    async def update(self, trader: Trader) -> None:
        held = self._held.get(trader.id)
        if held is None:
            await self._scheduler.update(trader)
        else:
            self._held[trader.id] = (trader, held[1])  # the sync updates only active traders

    async def pause(self, trader: Trader) -> None:
        held = self._held.pop(trader.id, None)
        if held is None:
            await self._scheduler.pause(trader)
        elif held[1] == self._scheduler.add:
            await self._scheduler.add(trader)  # the scheduler knows every trader the sync has seen

    async def remove(self, trader: Trader) -> None:
        held = self._held.pop(trader.id, None)
        if held is None or held[1] == self._scheduler.resume:  # one it was told about before
            await self._scheduler.remove(trader)

    def _hold(self, trader: Trader, arrival: Callable[[Trader], Awaitable[None]]) -> None:
        self._held[trader.id] = (trader, arrival)
        self._arrived.set()

    # Deciding ------------------------------------------------------------------------------------------
    async def run(self) -> None:
        self._state = ComponentState.RUNNING
        while True:
            await self._arrived.wait()
            while self._arrived.is_set():  # until the sync has been quiet for settle_secs
                self._arrived.clear()
                await self._clock.sleep(self._settings.settle_secs)
            await self._decide()

    def predicted_ratio(self, traders: list[Trader]) -> float:
        """The sweep ratio `traders` would take together on this machine."""
        runs: list[tuple[int, int]] = []
        for trader in traders:
            try:
                period_secs = parse_interval(trader.check_interval).period_secs
            except ConfigError:
                continue  # never scheduled (the scheduler reports it)
            runs.append((len(trader_symbols(trader, self._settings.default_symbols)), period_secs))
        rate = self._market_rate()
        return predicted_sweep_ratio(runs, self._check_cost_secs(), self._cpus(), rate if rate > 0 else 1.0)

    async def _decide(self) -> None:
        if not self._held:
            return
        ratio = self.predicted_ratio(self._scheduler.scheduled() + self.held)
        if ratio > ASK_ABOVE_SWEEP_RATIO:
            self._metrics.predicted_sweep_ratio = ratio  # what scale-machines reads from /metrics
            try:
                await self._ask_until_answered(ratio)
            finally:
                self._metrics.predicted_sweep_ratio = None
        await self._release()

    async def _ask_until_answered(self, ratio: float) -> None:
        answer = await self._ask_once()
        logger.info(
            "sizing asked held_traders=%d predicted_sweep_ratio=%.3f answer=%s",
            len(self._held), ratio, answer,
        )  # fmt: skip
        waited_secs = 0.0
        while answer == SizingAnswer.RESIZING and waited_secs < self._settings.restart_wait_secs:
            # The restart takes the held traders to the bigger machine; traders still arriving wait too.
            # Still here a while later: asked again, a resize that ended without restarting this machine
            # (refused before it began) answers otherwise, and they run here.
            await self._clock.sleep(self._settings.recheck_secs)
            waited_secs += self._settings.recheck_secs
            answer = await self._ask_once()
        if answer == SizingAnswer.RESIZING:
            logger.warning("no restart %.0fs after scale-machines began a resize", waited_secs)

    async def _ask_once(self) -> SizingAnswer | None:
        try:
            answer: SizingAnswer | None = await self._ask()
        except WorkerError as error:
            logger.warning("sizing request failed, running the held traders here: %s", error)
            answer = None
        if answer is not None:
            self.answers.append(answer)
        return answer

    async def _release(self) -> None:
        if self._state is ComponentState.STOPPED:
            return
        held, self._held = self._held, {}
        for trader, arrival in held.values():
            try:
                await arrival(trader)
            except (ConfigError, InvariantViolation):
                raise
            except Exception:
                logger.exception("scheduling a held trader failed trader_id=%s", trader.id)
