"""Who judges a backtest's signals: with the AI off the strategy itself (a long entry at its default stop and
target for every signal); with a model, analyze-signal's backtest form, given the context a live call reads
from the tables (the trader, the signal, its open position, its last three analyses) from the backtest's."""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from worker.backtest.store import MemoryTables
from worker.domain.decision import Decision
from worker.domain.enums import AnalysisDecision
from worker.domain.money import HUNDRED, ONE, exact
from worker.domain.trader import Trader
from worker.signals.analysis import Analysis, AnalysisClient, AnalysisFailed

_LEVEL_QUANTUM: Final = Decimal("1e-8")
HISTORY_ENTRIES: Final = 3  # the past analyses a live call reads (analyze-signal's HISTORY_ENTRIES)


@dataclass
class AnalystTally:
    """What the analyses of a backtest came to."""

    analyses: int = 0
    decisions: dict[str, int] = field(default_factory=dict)

    def count(self, decision: Decision) -> None:
        self.analyses += 1
        self.decisions[decision.decision.value] = self.decisions.get(decision.decision.value, 0) + 1


class DefaultLevels:
    """`--ai off`: every signal opens long at the strategy's default stop and target (fractions of the price);
    an open position is left to them (re-analysis does not run without a model)."""

    def __init__(self, trader: Trader, tables: MemoryTables) -> None:
        self._stop_fraction = trader.stop_loss_percent / HUNDRED
        self._target_fraction = trader.take_profit_percent / HUNDRED
        self._tables = tables
        self.tally = AnalystTally()

    async def analyze(
        self,
        trader_id: uuid.UUID,
        signal_id: uuid.UUID,
        market_data: dict[str, Any],
        *,
        request_id: uuid.UUID | None = None,
    ) -> Analysis:
        analysis_id = uuid.uuid5(signal_id, "default-levels")
        if self._tables.trading.open_position_of(signal_id) is not None:
            decision = Decision(
                AnalysisDecision.WATCH, "no AI: the position rides to its stop or target", 100
            )
        else:
            price = Decimal(repr(float(market_data["ticker"]["lastPrice"])))
            with exact():
                stop = (price * (ONE - self._stop_fraction)).quantize(_LEVEL_QUANTUM)
                target = (price * (ONE + self._target_fraction)).quantize(_LEVEL_QUANTUM)
            decision = Decision(
                AnalysisDecision.OPEN_LONG,
                "no AI: the strategy's default stop and target",
                100,
                stop_loss=stop,
                take_profit=target,
                position_size=ONE,
            )
        self.tally.count(decision)
        return Analysis(decision, analysis_id, request_id or analysis_id, replayed=False, attempts=1)


class ModelAnalyst:
    """`--ai standin|gemini`: each signal (and each open position's re-analysis) judged by analyze-signal's
    backtest form, as the user. A failed analysis stops the backtest (`failure`): a result with some signals
    judged and others dropped would not be the strategy's."""

    def __init__(self, trader: Trader, tables: MemoryTables, client: AnalysisClient) -> None:
        self._trader = {"name": trader.name, "aiInstructions": trader.ai_instructions}
        self._tables = tables
        self._client = client
        self._history: dict[uuid.UUID, deque[dict[str, Any]]] = {}
        self.failure: AnalysisFailed | None = None
        self.tally = AnalystTally()

    async def analyze(
        self,
        trader_id: uuid.UUID,
        signal_id: uuid.UUID,
        market_data: dict[str, Any],
        *,
        request_id: uuid.UUID | None = None,
    ) -> Analysis:
        signal = self._tables.signals.rows[signal_id]
        history = self._history.setdefault(signal_id, deque(maxlen=HISTORY_ENTRIES))
        context = {
            "trader": self._trader,
            "signal": {
                "status": signal.status.value,
                "triggerPrice": float(signal.trigger_price),
                "createdAt": signal.created_at.isoformat(),
            },
            "position": self._position(signal_id),
            "history": list(reversed(history)),  # newest first, as the live call reads them
        }
        try:
            decision, attempts = await self._client.judge_backtest(context, market_data)
        except AnalysisFailed as error:
            self.failure = self.failure or error
            raise
        history.append(
            {
                "timestamp": self._tables.clock.now().isoformat(),
                "decision": decision.decision.value,
                "confidence": decision.confidence,
                "reasoning": decision.reasoning,
            }
        )
        self.tally.count(decision)
        analysis_id = uuid.uuid4()
        return Analysis(decision, analysis_id, request_id or analysis_id, replayed=False, attempts=attempts)

    def _position(self, signal_id: uuid.UUID) -> dict[str, Any] | None:
        record = self._tables.trading.open_record_of(signal_id)
        if record is None:
            return None
        position = record.position
        return {
            "side": position.side.value,
            "entryPrice": float(position.book.entry_price),
            "size": float(position.book.size),
            "stopLoss": float(position.stop_loss) if position.stop_loss is not None else None,
            "takeProfit": float(position.take_profit) if position.take_profit is not None else None,
            "openedAt": record.opened_at.isoformat(),
        }
