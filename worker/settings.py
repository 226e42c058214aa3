"""The worker's settings: read from the environment once, checked, frozen. The only place that reads env."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, HttpUrl, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.domain.intervals import CLOSE_FALLBACK_SECS, INTERVAL_MS
from worker.errors import ConfigError
from worker.sandbox.sizing import MachineSize, processes_for

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

# The signal engine's default universe when DEFAULT_SYMBOLS is not set (liquid USDT pairs).
DEFAULT_SYMBOLS = (
    "BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "TRXUSDT", "AVAXUSDT",
    "LINKUSDT", "DOTUSDT", "LTCUSDT", "BCHUSDT", "NEARUSDT", "UNIUSDT", "ATOMUSDT", "ETCUSDT", "XLMUSDT",
    "APTUSDT", "FILUSDT",
)  # fmt: skip
_SYMBOL = re.compile(r"^[A-Z0-9]{2,20}$")
_PRODUCTION_REST = "https://api.binance.com"
_PRODUCTION_STREAMS = "wss://stream.binance.com:9443"


class WorkerSettings(BaseSettings):
    """Everything a worker machine is told at provisioning (env vars of the same name, upper-case)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    user_id: uuid.UUID
    machine_id: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    supabase_url: HttpUrl
    supabase_anon_key: SecretStr
    # The trader_machine JWT (role trader_machine, sub = user_id, machine_id): all database access uses it.
    machine_token: SecretStr
    # Renews MACHINE_TOKEN (an hour at most) at machine-token while the machine is live; unset: never renewed.
    machine_credential: SecretStr | None = None
    # Bearer secret that callers of the POST endpoints (lifecycle functions, operators) must present.
    machine_api_secret: SecretStr = Field(min_length=16)
    version: str = "dev"
    paper_trading_only: bool = True
    binance_api_key: SecretStr | None = None
    binance_api_secret: SecretStr | None = None
    binance_base_url: HttpUrl = HttpUrl(_PRODUCTION_REST)
    # Market streams; unset: Binance's streams for Binance's REST URL, else the REST host itself over ws(s)
    # (the local exchange simulator serves both on one port).
    binance_stream_url: str | None = Field(default=None, pattern=r"^wss?://[^\s/]+(/[^\s]*)?$")
    # While Binance cannot be reached, the failure is re-reported this often (the database alerts the
    # operator once it has lasted its threshold, 5 minutes by default).
    binance_health_repeat_secs: float = Field(default=60.0, gt=0, le=3600)
    # How often the market clock reads the exchange's time (between reads, market events move it). A test
    # that steps a paused replay sets it long: a stepped market has no pace, and a pace measured across
    # its jumps would run the clock ahead of it.
    market_clock_sync_secs: float = Field(default=1.0, gt=0, le=3600)
    log_level: LogLevel = "INFO"
    # Shipping log lines to machine_logs (the console's logs pane): level, cadence, batch and queue bounds.
    log_ship_level: LogLevel = "INFO"
    log_ship_interval_secs: float = Field(default=2.0, gt=0, le=60)
    log_ship_batch_lines: int = Field(default=200, ge=1, le=500)
    log_ship_queue_lines: int = Field(default=5000, ge=10, le=100_000)
    http_host: str = "::"
    http_port: int = Field(default=8080, ge=1, le=65535)
    heartbeat_interval_secs: float = Field(default=30.0, gt=0, le=60)
    shutdown_timeout_secs: float = Field(default=30.0, gt=0)
    # Set by Fly on every machine: its memory, which /metrics reports next to what the worker uses.
    fly_vm_memory_mb: int | None = Field(default=None, ge=1)
    # Signal engine: universe, freshness, cooldown, candle-close timing.
    default_symbols: Annotated[tuple[str, ...], NoDecode] = DEFAULT_SYMBOLS
    kline_history: int = Field(default=1000, ge=50, le=5000)
    signal_cooldown_secs: float = Field(default=300.0, ge=0)
    signal_stale_after_secs: float = Field(default=60.0, gt=0)
    signal_stranded_after_secs: float = Field(default=900.0, gt=0)
    candle_close_gather_secs: float = Field(default=0.5, gt=0, le=10)
    candle_close_fallback_secs: float = Field(default=CLOSE_FALLBACK_SECS, gt=0, le=60)
    # Sandbox pool: processes (unset: one per CPU, as many as fit in memory beside the worker), memory per
    # process, default per-check deadline.
    sandbox_processes: int = Field(default_factory=lambda: processes_for(MachineSize.detect()), ge=1, le=16)
    sandbox_memory_limit_mb: int = Field(default=192, ge=32, le=4096)
    sandbox_deadline_ms: float = Field(default=250.0, ge=1, le=60_000)
    # analyze-signal: per-attempt timeout, overall deadline, attempts, per-trader calls per rolling hour.
    analysis_attempt_timeout_secs: float = Field(default=45.0, gt=0)
    analysis_deadline_secs: float = Field(default=120.0, gt=0)
    analysis_max_attempts: int = Field(default=4, ge=1, le=10)
    analysis_calls_per_hour: int = Field(default=60, ge=1)
    analysis_concurrency: int = Field(default=4, ge=1, le=32)
    # Trading: paper fills, sizing without positionSize, guardrails, the position monitor, trailing stops
    # for new positions (off, percent of price, or ATR multiple of TRADING_ATR_INTERVAL candles).
    trading_paper_fee_rate: Decimal = Field(default=Decimal("0.001"), ge=0, lt=1)
    # At most the slippage the database allows a paper fill (transitions.max_paper_slippage()).
    trading_paper_slippage_rate: Decimal = Field(default=Decimal("0.0005"), ge=0, le=Decimal("0.05"))
    trading_default_balance_fraction: Decimal = Field(default=Decimal("0.1"), gt=0, le=1)
    trading_symbol_cooldown_secs: float = Field(default=900.0, ge=0)
    trading_safe_mode_failures: int = Field(default=3, ge=1, le=100)
    trading_monitor_sweep_interval_secs: float = Field(default=1.0, gt=0, le=60)
    trading_stale_price_secs: float = Field(default=10.0, gt=0)
    trading_trailing_mode: Literal["off", "percent", "atr"] = "off"
    trading_trailing_distance: Decimal = Field(default=Decimal("0.02"), gt=0)
    trading_trailing_activation_fraction: Decimal = Field(default=Decimal("0"), ge=0, lt=1)
    trading_atr_interval: str = "1h"  # a kline interval (worker/domain/intervals.py)
    trading_exchange_stop_update_secs: float = Field(default=10.0, gt=0)
    trading_order_timeout_secs: float = Field(default=10.0, gt=0, le=60)

    @field_validator("log_level", "log_ship_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("trading_atr_interval")
    @classmethod
    def _kline_interval(cls, value: str) -> str:
        if value not in INTERVAL_MS:
            raise ValueError(f"not a kline interval; one of {', '.join(INTERVAL_MS)}")
        return value

    @field_validator("default_symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip().upper() for part in value.split(",") if part.strip())
        if isinstance(value, list | tuple):
            bad = [str(symbol) for symbol in value if not _SYMBOL.match(str(symbol))]
            if bad:
                raise ValueError(f"not Binance symbols: {', '.join(bad[:5])}")
            if not value:
                raise ValueError("at least one symbol is needed")
            return tuple(dict.fromkeys(value))
        return value

    @property
    def stream_url(self) -> str:
        """The market streams' base URL (see `binance_stream_url`)."""
        if self.binance_stream_url:
            return self.binance_stream_url.rstrip("/")
        rest = str(self.binance_base_url).rstrip("/")
        if rest == _PRODUCTION_REST:
            return _PRODUCTION_STREAMS
        return "ws" + rest.removeprefix("http")

    @property
    def functions_url(self) -> str:
        return f"{str(self.supabase_url).rstrip('/')}/functions/v1"

    @property
    def realtime_url(self) -> str:
        return f"{str(self.supabase_url).rstrip('/')}/realtime/v1"

    @property
    def rest_url(self) -> str:
        return f"{str(self.supabase_url).rstrip('/')}/rest/v1"

    def secrets(self) -> list[str]:
        """Every secret value, for the log redactor."""
        values = [self.supabase_anon_key, self.machine_token, self.machine_api_secret]
        values += [self.machine_credential] if self.machine_credential is not None else []
        values += [secret for secret in (self.binance_api_key, self.binance_api_secret) if secret is not None]
        return [secret.get_secret_value() for secret in values if secret.get_secret_value()]


def load_settings(environ: Mapping[str, str] | None = None) -> WorkerSettings:
    """Read the settings (from `environ` when given, else the process environment).

    Raises:
        ConfigError: one line naming every missing or invalid variable.
    """
    try:
        if environ is None:
            return WorkerSettings()  # type: ignore[call-arg]  # pydantic-settings fills fields from env
        return WorkerSettings.model_validate({key.lower(): value for key, value in environ.items()})
    except ValidationError as error:
        raise settings_error("worker settings", error) from None


def settings_error(what: str, error: ValidationError) -> ConfigError:
    """One line naming every missing or invalid environment variable of a settings model."""
    problems = []
    for issue in error.errors():
        name = str(issue["loc"][0]).upper() if issue["loc"] else "?"
        reason = "is missing" if issue["type"] == "missing" else f"is invalid ({issue['msg']})"
        problems.append(f"{name} {reason}")
    return ConfigError(f"{what}: " + "; ".join(problems))
