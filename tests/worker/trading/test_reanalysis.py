"""Re-analysis: watching signals and open positions go back to the model and the decisions are applied.

The analyzer is a scripted stand-in at the AnalysisClient seam (the HTTP client itself is tested with the
signal engine); everything after it is real: executor, transition RPCs, the local stack."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import psycopg

from tests.worker.trading.helpers import TradingEnv, decision, trading_env
from worker.domain.decision import Decision
from worker.domain.enums import AnalysisDecision as D
from worker.domain.trader import Trader
from worker.signals.analysis import Analysis, AnalysisFailed, FailureKind
from worker.trading.reanalysis import TradingReanalyzer


class ScriptedAnalyzer:
    """Answers per signal from a script; a missing entry fails like an unavailable model."""

    def __init__(self, answers: dict[uuid.UUID, Decision]) -> None:
        self.answers = answers
        self.calls: list[uuid.UUID] = []

    async def analyze(
        self,
        trader_id: uuid.UUID,
        signal_id: uuid.UUID,
        market_data: dict[str, Any],
        *,
        request_id: uuid.UUID | None = None,
    ) -> Analysis:
        self.calls.append(signal_id)
        answer = self.answers.get(signal_id)
        if answer is None:
            raise AnalysisFailed(FailureKind.UNAVAILABLE, "model unavailable")
        return Analysis(answer, uuid.uuid4(), request_id or uuid.uuid4(), False, 1)


def market(_trader: Trader, symbol: str) -> tuple[dict[str, Any], Decimal]:
    return {"symbol": symbol}, Decimal(40000) if symbol == "BTCUSDT" else Decimal(2000)


def reanalyzer(env: TradingEnv, analyzer: ScriptedAnalyzer) -> TradingReanalyzer:
    """The app's re-analyzer parts, with the scripted model and market data."""
    return TradingReanalyzer(
        env.executor, analyzer, market, positions=env.positions, signals=env.tables.signals,
        guardrails=env.guardrails,
    )  # fmt: skip


async def test_watches_positions_and_abandoned_watches(db: psycopg.Connection[Any]) -> None:
    async with trading_env(db) as env:
        held = env.new_signal("BTCUSDT")
        await env.executor.execute(
            env.context(held), decision(D.OPEN_LONG, stop_loss="39000", take_profit="42000")
        )
        abandoned = env.new_signal("ETHUSDT", Decimal(2000), status="watching")
        analyzer = ScriptedAnalyzer({held: decision(D.UPDATE_STOP_LOSS, new_stop_loss="39800"),
                                     abandoned: decision(D.CLOSE)})  # fmt: skip
        report = await reanalyzer(env, analyzer).run(env.trader)
        position = env.row("select stop_loss, status from positions where signal_id = %s", held)
        watch = env.row("select status, close_reason from signals where id = %s", abandoned)
    assert sorted(map(str, analyzer.calls)) == sorted([str(held), str(abandoned)])
    assert (report.analysed, report.failed) == (2, 0)
    assert position == {"stop_loss": Decimal(39800), "status": "open"}
    assert watch["status"] == "closed" and watch["close_reason"].startswith("watch abandoned (close)")


async def test_three_failed_reanalyses_put_the_trader_in_safe_mode(db: psycopg.Connection[Any]) -> None:
    async with trading_env(db) as env:
        env.new_signal("BTCUSDT", status="watching")
        failing = reanalyzer(env, ScriptedAnalyzer({}))
        for _ in range(3):
            report = await failing.run(env.trader)
            assert report.failed == 1
        assert env.guardrails.in_safe_mode(env.trader.id)
