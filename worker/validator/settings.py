"""The validator's settings: read from the environment once, checked, frozen."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.settings import LogLevel, settings_error


class ValidatorSettings(BaseSettings):
    """VALIDATOR_SECRET (required, 32+ characters), VALIDATOR_PROCESSES, VALIDATOR_DEADLINE_MS, ..."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    # The bearer secret generate-strategy presents (the function secret of the same name).
    validator_secret: SecretStr = Field(min_length=32)
    # Same per-check deadline and memory limit as a worker's sandbox, so what passes here runs there.
    validator_processes: int = Field(default=2, ge=1, le=16)
    validator_deadline_ms: float = Field(default=250.0, ge=1, le=60_000)
    validator_memory_limit_mb: int = Field(default=192, ge=32, le=4096)
    validator_max_concurrent: int = Field(default=8, ge=1, le=256)
    http_host: str = "::"
    http_port: int = Field(default=8080, ge=1, le=65535)
    log_level: LogLevel = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


def load_validator_settings(environ: Mapping[str, str] | None = None) -> ValidatorSettings:
    """Read the settings (from `environ` when given, else the process environment).

    Raises:
        ConfigError: one line naming every missing or invalid variable.
    """
    try:
        if environ is None:
            return ValidatorSettings()  # type: ignore[call-arg]  # pydantic-settings fills fields from env
        return ValidatorSettings.model_validate({key.lower(): value for key, value in environ.items()})
    except ValidationError as error:
        raise settings_error("validator settings", error) from None
