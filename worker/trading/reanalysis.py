"""Re-analysis: on each trader's interval, every watching signal and open position goes back to the model.

Implements the scheduler's `Reanalyzer`. The analysis call is the signal engine's `AnalysisClient`
(worker/signals/analysis.py: retries, requestId, deadline, the per-trader budget); its failures count
towards safe mode. A watch the model abandons (anything but watch or an entry) closes the signal.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from worker.db.signals import SignalStore
from worker.domain.enums import AnalysisDecision, SignalStatus
from worker.domain.signal import SignalContext
from worker.domain.trader import Trader
from worker.errors import WorkerError
from worker.signals.analysis import Analysis, AnalysisFailed
from worker.trading.executor import TradeExecutor
from worker.trading.guardrails import Guardrails
from worker.trading.positions import OpenPositions

logger = logging.getLogger(__name__)

KEEPS_A_WATCH = frozenset({AnalysisDecision.WATCH, AnalysisDecision.OPEN_LONG, AnalysisDecision.OPEN_SHORT})


class Analyzer(Protocol):
    async def analyze(
        self,
        trader_id: uuid.UUID,
        signal_id: uuid.UUID,
        market_data: dict[str, Any],
        *,
        request_id: uuid.UUID | None = None,
    ) -> Analysis: ...


# (trader, symbol) -> (marketData body, last price), or None when the market data is not there yet.
MarketDataSource = Callable[[Trader, str], tuple[dict[str, Any], Decimal] | None]


@dataclass(frozen=True, slots=True)
class ReanalysisReport:
    trader_id: uuid.UUID
    analysed: int
    failed: int
    skipped: int


class TradingReanalyzer:
    """Sends a trader's watching signals and open positions for analysis and applies the decisions."""

    def __init__(
        self,
        executor: TradeExecutor,
        analyzer: Analyzer,
        market_data: MarketDataSource,
        *,
        positions: OpenPositions,
        signals: SignalStore,
        guardrails: Guardrails,
    ) -> None:
        self._executor = executor
        self._positions = positions
        self._signals = signals
        self._guardrails = guardrails
        self._analyzer = analyzer
        self._market_data = market_data
        self.last_report: ReanalysisReport | None = None

    async def reanalyze(self, trader: Trader) -> None:
        await self.run(trader)

    async def run(self, trader: Trader) -> ReanalysisReport:
        items: dict[uuid.UUID, tuple[str, Decimal, SignalStatus]] = {}
        for position in self._positions.of_trader(trader.id):
            items[position.signal_id] = (
                position.symbol,
                position.book.entry_price,
                SignalStatus.POSITION_OPEN,
            )
        try:
            watching = await self._signals.watching(trader.id)
        except WorkerError as error:
            logger.warning(
                "re-analysis could not list watching signals trader_id=%s error=%s", trader.id, error
            )
            watching = []
        for signal in watching:
            items.setdefault(signal.id, (signal.symbol, signal.trigger_price, SignalStatus.WATCHING))
        analysed = failed = skipped = 0
        for signal_id, (symbol, trigger_price, status) in items.items():
            market = self._market_data(trader, symbol)
            if market is None:
                skipped += 1
                continue
            body, last_price = market
            try:
                analysis = await self._analyzer.analyze(trader.id, signal_id, body)
            except AnalysisFailed as error:
                failed += 1
                self._executor.record_analysis_failure(trader.id, str(error))
                logger.warning(
                    "re-analysis failed signal_id=%s kind=%s error=%s", signal_id, error.kind, error
                )
                continue
            analysed += 1
            decision = analysis.decision
            context = SignalContext(
                signal_id, trader, symbol, trigger_price, last_price, analysis.analysis_id
            )
            if status is SignalStatus.WATCHING and decision.decision not in KEEPS_A_WATCH:
                self._guardrails.record_analysis_success(trader.id)
                await self._signals.set_state(
                    signal_id,
                    status=SignalStatus.CLOSED,
                    close_reason=f"watch abandoned ({decision.decision}): {decision.reasoning}"[:500],
                )
                continue
            try:
                await self._executor.execute(context, decision)
            except WorkerError as error:
                # One signal's failure must not stop the trader's other re-analyses.
                logger.error("re-analysis decision failed signal_id=%s error=%s", signal_id, error)
        report = ReanalysisReport(trader.id, analysed, failed, skipped)
        self.last_report = report
        logger.info(
            "re-analysis done trader_id=%s analysed=%d failed=%d skipped=%d",
            trader.id,
            analysed,
            failed,
            skipped,
        )
        return report
