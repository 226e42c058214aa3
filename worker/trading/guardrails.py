"""Guardrails in code, not in the prompt: sizing, position limits, cooldowns, daily loss limit, safe mode.

Every check returns a `Refusal` naming the rule, which the executor records on the signal.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from worker.domain.enums import TradingMode
from worker.domain.money import ONE, ZERO, exact, plain
from worker.domain.positions import OpenPosition
from worker.domain.trader import Trader
from worker.trading.config import TradingConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Refusal:
    rule: str
    message: str

    def __str__(self) -> str:
        return f"refused ({self.rule}): {self.message}"


def check_mode(trader: Trader, venue_mode: TradingMode) -> Refusal | None:
    """A trader opens positions only on its own mode's venue; a machine holds one venue (real while the user
    has a real trader and the keys, else paper), so the other mode's traders add no exposure meanwhile."""
    if trader.trading_mode is venue_mode:
        return None
    if trader.trading_mode is TradingMode.REAL:
        return Refusal(
            "trading_mode", "the trader is set to real but this machine trades on paper: restart the machine"
        )
    return Refusal(
        "trading_mode", "the trader trades on paper but this machine trades real money: no paper entries here"
    )


class Guardrails:
    """Per-trader limits; state is in memory and seeded from the database at start (see recovery)."""

    def __init__(self, config: TradingConfig) -> None:
        self._config = config
        self._failures: dict[uuid.UUID, int] = defaultdict(int)
        self._last_close: dict[tuple[uuid.UUID, str], datetime] = {}
        self._day: date | None = None
        self._net_today: dict[uuid.UUID, Decimal] = defaultdict(lambda: ZERO)

    # Analysis outcomes (safe mode) -------------------------------------------------------------------
    def record_analysis_failure(self, trader_id: uuid.UUID, reason: str = "") -> bool:
        """Count a failed analysis; True when this failure put the trader into safe mode."""
        self._failures[trader_id] += 1
        entered = self._failures[trader_id] == self._config.safe_mode_failures
        if entered:
            logger.warning(
                "safe mode on: no new entries trader_id=%s consecutive_ai_failures=%d reason=%s",
                trader_id, self._failures[trader_id], reason,
            )  # fmt: skip
        return entered

    def record_analysis_success(self, trader_id: uuid.UUID) -> None:
        if self._failures.pop(trader_id, 0) >= self._config.safe_mode_failures:
            logger.info("safe mode off trader_id=%s", trader_id)

    def in_safe_mode(self, trader_id: uuid.UUID) -> bool:
        return self._failures.get(trader_id, 0) >= self._config.safe_mode_failures

    # Closes and PnL -----------------------------------------------------------------------------------
    def record_close(self, trader_id: uuid.UUID, symbol: str, at: datetime) -> None:
        key = (trader_id, symbol)
        if key not in self._last_close or self._last_close[key] < at:
            self._last_close[key] = at

    def record_realized(self, trader_id: uuid.UUID, net_usd: Decimal, at: datetime) -> None:
        """Add a fill's net realised PnL (after fees) to the trader's UTC day."""
        self._roll(at)
        if at.date() == self._day:
            with exact():
                self._net_today[trader_id] += net_usd

    def net_today(self, trader_id: uuid.UUID, now: datetime) -> Decimal:
        self._roll(now)
        return self._net_today.get(trader_id, ZERO)

    def _roll(self, now: datetime) -> None:
        if self._day != now.date():
            self._day = now.date()
            self._net_today.clear()

    # Checks -------------------------------------------------------------------------------------------
    def check_entry(
        self,
        trader: Trader,
        symbol: str,
        open_positions: list[OpenPosition],
        now: datetime,
        *,
        flip: bool = False,
    ) -> Refusal | None:
        """Whether `trader` may open a position on `symbol` now (`open_positions`: the trader's own)."""
        if self.in_safe_mode(trader.id):
            return Refusal(
                "safe_mode",
                f"{self._failures[trader.id]} consecutive AI failures; no entries until an analysis succeeds",
            )
        net = self.net_today(trader.id, now)
        limit = trader.risk.daily_loss_limit_usd
        if net < 0 and -net >= limit:
            return Refusal(
                "daily_loss_limit", f"today's loss {plain(-net)} USD reached the limit {plain(limit)} USD"
            )
        if any(p.symbol == symbol for p in open_positions):
            return Refusal("one_position_per_symbol", f"the trader already holds a position in {symbol}")
        if len(open_positions) >= trader.risk.max_open_positions:
            return Refusal(
                "max_open_positions",
                f"{len(open_positions)} open positions (limit {trader.risk.max_open_positions})",
            )
        last = self._last_close.get((trader.id, symbol))
        cooldown = timedelta(seconds=self._config.symbol_cooldown_secs)
        if not flip and last is not None and now - last < cooldown:
            ago = int((now - last).total_seconds())
            left = int((cooldown - (now - last)).total_seconds())
            return Refusal("symbol_cooldown", f"{symbol} was closed {ago}s ago; {left}s of cooldown left")
        return None

    def check_add(self, trader: Trader, now: datetime) -> Refusal | None:
        """Whether `trader` may add to a position (scale in): safe mode and the daily loss limit apply."""
        if self.in_safe_mode(trader.id):
            return Refusal("safe_mode", "consecutive AI failures; no new exposure until an analysis succeeds")
        net = self.net_today(trader.id, now)
        if net < 0 and -net >= trader.risk.daily_loss_limit_usd:
            return Refusal("daily_loss_limit", f"today's loss {plain(-net)} USD reached the limit")
        return None

    def entry_notional(self, trader: Trader, position_size: Decimal | None, balance_usd: Decimal) -> Decimal:
        """The quote amount to commit: positionSize x max size, or a fraction of the balance, clamped to the
        trader's max_position_size_usd and to the balance."""
        cap = trader.risk.max_position_size_usd
        with exact():
            if position_size is not None:
                wanted = cap * min(max(position_size, ZERO), ONE)
            else:
                wanted = balance_usd * self._config.default_balance_fraction
        return max(ZERO, min(wanted, cap, balance_usd))
