"""Trader values parse from real rows (PostgREST and Realtime shapes) and refuse unusable ones by field."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal
from typing import Any

import pytest

from worker.domain.enums import TraderStatus
from worker.domain.trader import Trader, TraderRowError


def _row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "00000000-0000-4000-8000-0000000000a1",
        "user_id": "00000000-0000-4000-8000-000000000001",
        "name": "RSI dip buyer",
        "description": "ignored by the worker",
        "signal_code": "def check_signal(symbol, ticker, klines):\n    return False\n",
        "signal_code_version": 2,
        "ai_instructions": "Be careful.",
        "timeframes": ["1m", "5m"],
        "check_interval": "1m_close",
        "reanalysis_interval": "5m",
        "symbols": ["BTCUSDT"],
        "risk": {"max_position_size_usd": 100.1, "max_open_positions": 3, "daily_loss_limit_usd": 50},
        "status": "active",
        "error_message": None,
        "created_at": "2026-11-20T22:07:30.406129+00:00",
        "updated_at": "2026-11-20T22:09:45.779629+00:00",
    }
    row.update(overrides)
    return row


def test_a_row_parses_into_a_frozen_trader_with_exact_money() -> None:
    trader = Trader.from_row(_row())

    assert trader.id == uuid.UUID("00000000-0000-4000-8000-0000000000a1")
    assert trader.timeframes == ("1m", "5m")
    assert trader.risk.max_position_size_usd == Decimal("100.1")
    assert trader.risk.max_open_positions == 3
    assert trader.status is TraderStatus.ACTIVE
    assert trader.updated_at.utcoffset() is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        trader.name = "other"  # type: ignore[misc]


def test_null_symbols_mean_the_default_universe() -> None:
    assert Trader.from_row(_row(symbols=None)).symbols is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"status": "sleeping"}, "status"),
        ({"risk": {"max_position_size_usd": 0, "max_open_positions": 3, "daily_loss_limit_usd": 1}}, "risk"),
        ({"timeframes": []}, "timeframes"),
        ({"updated_at": "2026-11-20T22:09:45"}, "updated_at"),
        ({"id": "not-a-uuid"}, "id"),
    ],
)
def test_an_unusable_row_is_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(TraderRowError, match=field):
        Trader.from_row(_row(**overrides))


def test_runs_like_ignores_only_what_does_not_change_what_runs() -> None:
    trader = Trader.from_row(_row())

    renamed = Trader.from_row(_row(name="New name", updated_at="2026-11-21T00:00:00+00:00"))
    recoded = Trader.from_row(_row(signal_code_version=3))
    paused = Trader.from_row(_row(status="paused"))
    riskier = Trader.from_row(_row(risk={**_row()["risk"], "max_open_positions": 4}))

    assert trader.runs_like(renamed)
    assert not trader.runs_like(recoded)
    assert not trader.runs_like(paused)
    assert not trader.runs_like(riskier)
