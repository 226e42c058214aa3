"""Settings are read once, checked, and every problem is named in one line."""

from __future__ import annotations

import uuid

import pytest

from worker.errors import ConfigError
from worker.sandbox.sizing import MachineSize, processes_for
from worker.settings import load_settings

VALID = {
    "USER_ID": str(uuid.uuid4()),
    "MACHINE_ID": "148e1234",
    "SUPABASE_URL": "http://127.0.0.1:54321",
    "SUPABASE_ANON_KEY": "anon-key-value",
    "MACHINE_TOKEN": "machine-token-value",
    "MACHINE_API_SECRET": "a-long-enough-secret",
}


def test_defaults_are_safe() -> None:
    settings = load_settings(VALID)

    assert settings.paper_trading_only is True
    assert settings.binance_api_key is None
    assert settings.http_port == 8080
    assert settings.rest_url == "http://127.0.0.1:54321/rest/v1"


def test_flags_and_levels_parse_like_environment_strings() -> None:
    settings = load_settings(
        VALID | {"PAPER_TRADING_ONLY": "false", "LOG_LEVEL": "debug", "HTTP_PORT": "9090"}
    )

    assert (settings.paper_trading_only, settings.log_level, settings.http_port) == (False, "DEBUG", 9090)


def test_every_problem_is_named_without_echoing_values() -> None:
    environ = VALID | {"USER_ID": "alice", "HTTP_PORT": "70000", "MACHINE_API_SECRET": "tiny-secret"}
    del environ["MACHINE_TOKEN"]

    with pytest.raises(ConfigError) as failure:
        load_settings(environ)

    message = str(failure.value)
    assert "\n" not in message
    for expected in (
        "USER_ID is invalid",
        "HTTP_PORT is invalid",
        "MACHINE_TOKEN is missing",
        "MACHINE_API_SECRET is invalid",
    ):
        assert expected in message
    assert "tiny-secret" not in message


def test_secrets_lists_every_secret_for_redaction() -> None:
    settings = load_settings(
        VALID | {"BINANCE_API_KEY": "binance-key-1234", "BINANCE_API_SECRET": "binance-secret-5678"}
    )

    expected = {"anon-key-value", "machine-token-value", "a-long-enough-secret"}
    assert set(settings.secrets()) == expected | {"binance-key-1234", "binance-secret-5678"}


def test_sandbox_processes_are_sized_by_the_machine_unless_set() -> None:
    assert load_settings(VALID).sandbox_processes == processes_for(MachineSize.detect())
    assert load_settings(VALID | {"SANDBOX_PROCESSES": "3"}).sandbox_processes == 3
