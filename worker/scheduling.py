"""The scheduler as the trader sync sees it: what to run, told one trader at a time (implemented later)."""

from __future__ import annotations

from typing import Protocol

from worker.domain.trader import Trader


class TraderScheduler(Protocol):
    """Receives every change to the set of traders that alters what runs, in order, once each.

    The sync calls `add` once when it first sees a trader (in any status: only an active one runs),
    `update` when a running trader's definition changes, `pause` when a running trader stops being
    active (paused, or marked error), `resume` when a paused one becomes active again (the value carries
    its latest definition), and `remove` when it is deleted. Calls are awaited one at a time; an
    exception leaves the sync's view unchanged for that trader, so the next reconcile tries again.
    """

    async def add(self, trader: Trader) -> None: ...

    async def update(self, trader: Trader) -> None: ...

    async def pause(self, trader: Trader) -> None: ...

    async def resume(self, trader: Trader) -> None: ...

    async def remove(self, trader: Trader) -> None: ...
