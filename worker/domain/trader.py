"""A trader as the worker runs it: a frozen value parsed from a `traders` row (PostgREST or Realtime)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from worker.domain.enums import TraderStatus, TradingMode


class TraderRowError(ValueError):
    """A traders row the worker cannot use; the message names the trader and the field."""


@dataclass(frozen=True, slots=True)
class TraderRisk:
    max_position_size_usd: Decimal
    max_open_positions: int
    daily_loss_limit_usd: Decimal


@dataclass(frozen=True, slots=True)
class Trader:
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    signal_code: str
    signal_code_version: int
    ai_instructions: str
    timeframes: tuple[str, ...]
    check_interval: str
    reanalysis_interval: str
    symbols: tuple[str, ...] | None  # None: the default universe
    risk: TraderRisk
    status: TraderStatus
    error_message: str | None
    updated_at: datetime
    trading_mode: TradingMode = TradingMode.PAPER  # which venue may trade for it (traders.trading_mode)
    # The strategy's own stop and target, in percent of the entry price (backtests without the AI use them).
    stop_loss_percent: Decimal = Decimal(2)
    take_profit_percent: Decimal = Decimal(4)

    @property
    def is_active(self) -> bool:
        return self.status is TraderStatus.ACTIVE

    def runs_like(self, other: Trader) -> bool:
        """True when `other` would run exactly as this one: only name, error text or timestamps differ."""
        return (
            self.signal_code,
            self.signal_code_version,
            self.ai_instructions,
            self.timeframes,
            self.check_interval,
            self.reanalysis_interval,
            self.symbols,
            self.risk,
            self.status,
            self.trading_mode,
        ) == (
            other.signal_code,
            other.signal_code_version,
            other.ai_instructions,
            other.timeframes,
            other.check_interval,
            other.reanalysis_interval,
            other.symbols,
            other.risk,
            other.status,
            other.trading_mode,
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Trader:
        """Parse a row as PostgREST or Realtime render it (JSON numbers may arrive as floats)."""
        try:
            parsed = _TraderRow.model_validate(row)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
                for problem in error.errors()
            )
            raise TraderRowError(f"trader id={row.get('id')!r} is not usable: {problems}") from error
        return cls(
            id=parsed.id,
            user_id=parsed.user_id,
            name=parsed.name,
            signal_code=parsed.signal_code,
            signal_code_version=parsed.signal_code_version,
            ai_instructions=parsed.ai_instructions,
            timeframes=tuple(parsed.timeframes),
            check_interval=parsed.check_interval,
            reanalysis_interval=parsed.reanalysis_interval,
            symbols=tuple(parsed.symbols) if parsed.symbols is not None else None,
            risk=TraderRisk(
                max_position_size_usd=parsed.risk.max_position_size_usd,
                max_open_positions=parsed.risk.max_open_positions,
                daily_loss_limit_usd=parsed.risk.daily_loss_limit_usd,
            ),
            status=parsed.status,
            error_message=parsed.error_message,
            updated_at=parsed.updated_at,
            trading_mode=parsed.trading_mode,
            stop_loss_percent=parsed.default_stop_loss_percent,
            take_profit_percent=parsed.default_take_profit_percent,
        )


def _decimal(value: object) -> object:
    # Never through binary float: 0.1 must stay 0.1.
    return Decimal(str(value)) if isinstance(value, float) else value


class _Risk(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)

    max_position_size_usd: Decimal = Field(gt=0)
    max_open_positions: int = Field(ge=1, le=100)
    daily_loss_limit_usd: Decimal = Field(ge=0)

    _money = field_validator("max_position_size_usd", "daily_loss_limit_usd", mode="before")(_decimal)


class _TraderRow(BaseModel):
    # Rows carry columns the worker does not use (description, created_at): ignore them.
    model_config = ConfigDict(extra="ignore")

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    signal_code: str = Field(min_length=1)
    signal_code_version: int = Field(ge=1)
    ai_instructions: str
    timeframes: list[str] = Field(min_length=1)
    check_interval: str
    reanalysis_interval: str
    symbols: list[str] | None
    risk: _Risk
    status: TraderStatus
    error_message: str | None
    updated_at: datetime
    trading_mode: TradingMode = TradingMode.PAPER
    default_stop_loss_percent: Decimal = Field(default=Decimal(2), gt=0, lt=100)
    default_take_profit_percent: Decimal = Field(default=Decimal(4), gt=0, le=1000)

    _percent = field_validator("default_stop_loss_percent", "default_take_profit_percent", mode="before")(
        _decimal
    )

    @field_validator("updated_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a time zone")
        return value
