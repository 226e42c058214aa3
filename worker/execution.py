"""The seams between the signal engine and trading: who acts on a decision, who re-analyses a trader.

The signal engine (scheduler + signal run) calls a `DecisionExecutor` with every validated decision for a
freshly triggered signal, and each trader's re-analysis job calls a `Reanalyzer`. The trading component
implements both; `LoggingExecutor` is the stand-in used until then and by tests of the engine alone.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from worker.domain.decision import Decision
from worker.domain.trader import Trader

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SignalContext:
    """A signal the engine recorded and had analysed: what the executor needs to act on its decision."""

    signal_id: uuid.UUID
    trader: Trader
    symbol: str
    trigger_price: Decimal
    last_price: Decimal
    analysis_id: uuid.UUID


class DecisionExecutor(Protocol):
    async def execute(self, context: SignalContext, decision: Decision) -> None:
        """Act on `decision` for the signal (idempotent per analysis_id: a retry must not act twice)."""
        ...

    def record_analysis_failure(self, trader_id: uuid.UUID, reason: str = "") -> None:
        """Count an analysis that failed for good (consecutive failures put the trader in safe mode)."""
        ...


class Reanalyzer(Protocol):
    async def reanalyze(self, trader: Trader) -> None:
        """Send the trader's watching signals and open positions for analysis and apply the decisions."""
        ...


class LoggingExecutor:
    """Records what it would do; stands in until the trading component is wired in."""

    async def execute(self, context: SignalContext, decision: Decision) -> None:
        logger.info(
            "decision not executed (no executor) signal_id=%s trader_id=%s symbol=%s decision=%s"
            " confidence=%d",
            context.signal_id,
            context.trader.id,
            context.symbol,
            decision.decision,
            decision.confidence,
        )

    def record_analysis_failure(self, trader_id: uuid.UUID, reason: str = "") -> None:
        logger.info("analysis failure not counted (no executor) trader_id=%s reason=%s", trader_id, reason)
