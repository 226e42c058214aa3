"""Whether Binance answers, as the worker's own requests find it, and the report of it to the database.

The market streams, the kline REST calls and the real venue's REST calls each say how a request ended:
data arriving, or any HTTP answer below 500, means the exchange answered; a refused or dropped connection,
a timeout, a 5xx, or streams that fall silent mean it did not. `ReachabilityReporter` tells the database
(public.report_service_health, through the gateway) each change, and repeats a failure while it lasts; the
database alerts the operator once a failure has gone on for its threshold (5 minutes for Binance) and
records the recovery with the first success.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from worker.clock import Clock
from worker.components import ComponentState
from worker.errors import WorkerError
from worker.log_setup import LogOnce

logger = logging.getLogger(__name__)

DETAIL_CHARS: Final = 500
# How often the reporter looks at the state (a change is reported within this).
CHECK_SECS: Final = 1.0

# report(ok, detail): one outcome to the database.
HealthReport = Callable[[bool, str | None], Awaitable[None]]


class Reachability:
    """The exchange's reachability from this machine: unknown until a first request ended."""

    def __init__(self) -> None:
        self.reachable: bool | None = None
        self.detail: str | None = None  # the last failure, while unreachable

    def answered(self) -> None:
        """The exchange answered a request (cheap: called for every stream message)."""
        if self.reachable is not True:
            self.reachable, self.detail = True, None

    def record_status(self, status: int, what: str) -> None:
        """An HTTP answer: a 5xx is the exchange failing, anything else (a 4xx or 429 too) an answer."""
        if status >= 500:
            self.unreachable(f"REST {what}: HTTP {status}")
        else:
            self.answered()

    def unreachable(self, detail: str) -> None:
        """A request found no exchange: refused, dropped, timed out, a 5xx, or silent streams."""
        self.reachable, self.detail = False, detail[:DETAIL_CHARS]


class ReachabilityReporter:
    """Reports each change of the exchange's reachability, and a failure again every `repeat_failure_secs`
    while it lasts (so the database sees an outage go on even if another report cleared it meanwhile)."""

    name = "binance-health"

    def __init__(
        self,
        reachability: Reachability,
        report: HealthReport,
        *,
        repeat_failure_secs: float,
        clock: Clock,
    ) -> None:
        self._reachability = reachability
        self._report = report
        self._repeat_failure_secs = repeat_failure_secs
        self._clock = clock
        self._log_once = LogOnce(logger, 300.0)
        self._reported: bool | None = None
        self._reported_at = 0.0

    def state(self) -> ComponentState:
        # A report that failed is tried again; the heartbeat is what says the database is out of reach.
        return ComponentState.RUNNING

    async def run(self) -> None:
        while True:
            await self.report_if_due()
            await self._clock.sleep(CHECK_SECS)

    async def report_if_due(self) -> None:
        """Report the current state if it changed since the last report, or is a failure due again."""
        reachable, detail = self._reachability.reachable, self._reachability.detail
        now = self._clock.monotonic()
        if reachable is None:
            return
        repeat_due = not reachable and now - self._reported_at >= self._repeat_failure_secs
        if reachable == self._reported and not repeat_due:
            return
        try:
            await self._report(reachable, detail)
        except WorkerError as error:
            self._log_once.warning("report", "could not report binance health: %s", error)
            return
        if reachable != self._reported:
            logger.info("binance health reported reachable=%s detail=%s", reachable, detail)
        self._reported, self._reported_at = reachable, now

    async def prepare_shutdown(self) -> None:
        return None
