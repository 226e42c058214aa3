"""The worker's settings: read from the environment once, checked, frozen. The only place that reads env."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, HttpUrl, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import ConfigError

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class WorkerSettings(BaseSettings):
    """Everything a worker machine is told at provisioning (env vars of the same name, upper-case)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    user_id: uuid.UUID
    machine_id: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    supabase_url: HttpUrl
    supabase_anon_key: SecretStr
    # The trader_machine JWT (role trader_machine, sub = user_id, machine_id): all database access uses it.
    machine_token: SecretStr
    # Bearer secret that callers of the POST endpoints (lifecycle functions, operators) must present.
    machine_api_secret: SecretStr = Field(min_length=16)
    version: str = "dev"
    paper_trading_only: bool = True
    binance_api_key: SecretStr | None = None
    binance_api_secret: SecretStr | None = None
    binance_base_url: HttpUrl = HttpUrl("https://api.binance.com")
    log_level: LogLevel = "INFO"
    http_host: str = "::"
    http_port: int = Field(default=8080, ge=1, le=65535)
    heartbeat_interval_secs: float = Field(default=30.0, gt=0, le=60)
    shutdown_timeout_secs: float = Field(default=30.0, gt=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def rest_url(self) -> str:
        return f"{str(self.supabase_url).rstrip('/')}/rest/v1"

    def secrets(self) -> list[str]:
        """Every secret value, for the log redactor."""
        values = [self.supabase_anon_key, self.machine_token, self.machine_api_secret]
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
        problems = []
        for issue in error.errors():
            name = str(issue["loc"][0]).upper() if issue["loc"] else "?"
            reason = "is missing" if issue["type"] == "missing" else f"is invalid ({issue['msg']})"
            problems.append(f"{name} {reason}")
        raise ConfigError("worker settings: " + "; ".join(problems)) from None
