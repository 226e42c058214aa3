"""The trading component's settings (cut from WorkerSettings by worker/app.py; safe defaults for tests)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from worker.domain.positions import TrailingMode


@dataclass(frozen=True, slots=True)
class TradingConfig:
    paper_fee_rate: Decimal = Decimal("0.001")
    paper_slippage_rate: Decimal = Decimal("0.0005")
    paper_min_notional_usd: Decimal = Decimal("1")
    # Position size when the decision gives no positionSize: this fraction of the balance (then clamped to
    # the trader's max_position_size_usd).
    default_balance_fraction: Decimal = Decimal("0.1")
    symbol_cooldown_secs: float = 900.0
    safe_mode_failures: int = 3
    monitor_sweep_interval_secs: float = 1.0
    stale_price_secs: float = 10.0
    # Trailing stops for new positions (None: off). Percent mode: distance is a fraction of price; ATR
    # mode: a multiple of the ATR of `atr_interval` candles. Activation: after this favourable move.
    trailing_mode: TrailingMode | None = None
    trailing_distance: Decimal = Decimal("0.02")
    trailing_activation_fraction: Decimal = Decimal("0")
    atr_interval: str = "1h"
    atr_period: int = 14
    # Real mode: how often a ratcheting trailing stop may replace the exchange-side stop, and how often the
    # exchange's open orders are reconciled with our protective orders.
    exchange_stop_update_secs: float = 10.0
    reconcile_interval_secs: float = 5.0
    trailing_persist_secs: float = 5.0
    stop_limit_buffer: Decimal = Decimal("0.005")
    order_timeout_secs: float = 10.0
