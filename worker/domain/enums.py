"""StrEnums whose values are exactly the Postgres enums of the same name (tests compare the two)."""

from __future__ import annotations

from enum import StrEnum


class UserTier(StrEnum):
    FREE = "free"
    PRO = "pro"
    ELITE = "elite"
    POWER = "power"


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    CANCELLED = "cancelled"
    PAST_DUE = "past_due"


class MachineStatus(StrEnum):
    PROVISIONING = "provisioning"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"
    DESTROYED = "destroyed"


class TraderStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    ERROR = "error"


class SignalStatus(StrEnum):
    """new -> watching -> position_open -> closed, or new -> closed on no_trade."""

    NEW = "new"
    WATCHING = "watching"
    POSITION_OPEN = "position_open"
    CLOSED = "closed"


class PositionSide(StrEnum):
    LONG = "long"
    SHORT = "short"


class PositionStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class TradingMode(StrEnum):
    PAPER = "paper"
    REAL = "real"


class OrderSide(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP_LOSS_LIMIT = "STOP_LOSS_LIMIT"
    TAKE_PROFIT_LIMIT = "TAKE_PROFIT_LIMIT"


class OrderStatus(StrEnum):
    PENDING = "pending"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    FAILED = "failed"


class AnalysisDecision(StrEnum):
    NO_TRADE = "no_trade"
    WATCH = "watch"
    OPEN_LONG = "open_long"
    OPEN_SHORT = "open_short"
    CLOSE = "close"
    PARTIAL_CLOSE = "partial_close"
    SCALE_IN = "scale_in"
    SCALE_OUT = "scale_out"
    UPDATE_STOP_LOSS = "update_stop_loss"
    UPDATE_TAKE_PROFIT = "update_take_profit"
    FLIP_POSITION = "flip_position"


class NotificationKind(StrEnum):
    """What a notification is about; the worker writes the first five, the database the rest."""

    SIGNAL_NEW = "signal_new"
    POSITION_OPENED = "position_opened"
    POSITION_CLOSED = "position_closed"
    TRADE_FAILED = "trade_failed"
    TRADER_ERROR = "trader_error"
    MACHINE_ERROR = "machine_error"
    MACHINE_RESIZED = "machine_resized"
    BUDGET_EXCEEDED = "budget_exceeded"


class NotificationChannel(StrEnum):
    WEBHOOK = "webhook"
    TELEGRAM = "telegram"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"
    SKIPPED = "skipped"


class OperatorAlertKind(StrEnum):
    MACHINE_START_FAILED = "machine_start_failed"
    HEARTBEAT_MISSED = "heartbeat_missed"
    BINANCE_UNREACHABLE = "binance_unreachable"
    GEMINI_FAILING = "gemini_failing"


class OperatorAlertEventKind(StrEnum):
    FIRED = "fired"
    RECOVERED = "recovered"


class MachineResizeStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    APPLIED = "applied"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class LogLevel(StrEnum):
    """public.log_level: the worker's log levels as machine_logs stores them."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


# Postgres type name -> the StrEnum mirroring it.
POSTGRES_ENUMS: dict[str, type[StrEnum]] = {
    "user_tier": UserTier,
    "subscription_status": SubscriptionStatus,
    "machine_status": MachineStatus,
    "trader_status": TraderStatus,
    "signal_status": SignalStatus,
    "position_side": PositionSide,
    "position_status": PositionStatus,
    "trading_mode": TradingMode,
    "order_side": OrderSide,
    "order_type": OrderType,
    "order_status": OrderStatus,
    "analysis_decision": AnalysisDecision,
    "notification_kind": NotificationKind,
    "notification_channel": NotificationChannel,
    "delivery_status": DeliveryStatus,
    "operator_alert_kind": OperatorAlertKind,
    "operator_alert_event_kind": OperatorAlertEventKind,
    "machine_resize_status": MachineResizeStatus,
    "log_level": LogLevel,
}
