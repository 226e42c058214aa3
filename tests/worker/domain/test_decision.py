"""The worker validates decisions with the same schema file the model and analyze-signal use."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from worker.domain.decision import InvalidDecision, decision_validator, parse_decision
from worker.domain.enums import AnalysisDecision


def payload(decision: str, **metadata: Any) -> dict[str, Any]:
    return {
        "decision": decision,
        "reasoning": "RSI 28 in an uptrend.",
        "confidence": 80,
        "metadata": metadata,
    }


def test_schema_enum_is_exactly_the_eleven_decisions() -> None:
    assert decision_validator().schema["properties"]["decision"]["enum"] == [
        d.value for d in AnalysisDecision
    ]


def test_an_entry_becomes_exact_decimals() -> None:
    decision = parse_decision(payload("open_long", stopLoss=41800.1, takeProfit=44500, positionSize=0.25))

    assert decision.decision is AnalysisDecision.OPEN_LONG
    assert (decision.stop_loss, decision.take_profit, decision.position_size) == (
        Decimal("41800.1"), Decimal("44500"), Decimal("0.25"))  # fmt: skip
    assert decision.close_percentage is None


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (payload("open_long", takeProfit=44500), "'stopLoss' is a required property"),
        (payload("partial_close", closePercentage=1), "closePercentage"),
        (payload("update_stop_loss"), "'newStopLoss' is a required property"),
        (payload("yolo"), "'yolo' is not one of"),
        ({**payload("watch"), "confidence": 101}, "confidence: 101 is greater than the maximum of 100"),
        ({**payload("watch"), "extra": 1}, "Additional properties are not allowed"),
        (payload("watch", leverage=10), "Additional properties are not allowed"),
    ],
)
def test_schema_violations_are_refused_with_the_rule_named(bad: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidDecision, match=problem):
        parse_decision(bad)
