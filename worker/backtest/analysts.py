"""Who judges a backtest's signals with the AI off: the strategy itself, a long entry at its default stop and
target for every signal (a model's judgement needs a backtest form of analyze-signal, not built yet)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from worker.backtest.store import MemoryTables
from worker.domain.decision import Decision
from worker.domain.enums import AnalysisDecision
from worker.domain.money import HUNDRED, ONE, exact
from worker.domain.trader import Trader
from worker.signals.analysis import Analysis

_LEVEL_QUANTUM: Final = Decimal("1e-8")


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
