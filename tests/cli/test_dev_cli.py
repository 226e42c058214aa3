"""The `trademind dev` commands as a person types them."""

from __future__ import annotations

import jwt
from typer.testing import CliRunner

from cli.main import app
from devstack import keys
from devstack.stack import DevStack

runner = CliRunner()


def test_jwt_prints_a_token_for_the_given_user() -> None:
    result = runner.invoke(
        app,
        [
            "dev",
            "jwt",
            "--role",
            "trader_machine",
            "--sub",
            "00000000-0000-4000-8000-000000000001",
            "--machine-id",
            "m-1",
        ],
    )

    claims = jwt.decode(
        result.stdout.strip(), keys.JWT_SECRET, algorithms=["HS256"], audience="authenticated"
    )
    assert result.exit_code == 0
    assert (claims["role"], claims["sub"], claims["machine_id"]) == (
        "trader_machine",
        "00000000-0000-4000-8000-000000000001",
        "m-1",
    )


def test_jwt_names_a_bad_role() -> None:
    result = runner.invoke(app, ["dev", "jwt", "--role", "admin"])

    assert result.exit_code == 1
    assert "unknown role 'admin'" in result.stderr


def test_jwt_names_a_bad_sub() -> None:
    result = runner.invoke(app, ["dev", "jwt", "--sub", "alice"])

    assert result.exit_code == 1
    assert "--sub must be a UUID, got 'alice'" in result.stderr


def test_status_lists_every_part(stack: DevStack) -> None:
    result = runner.invoke(app, ["dev", "status"])

    assert result.exit_code == 0
    for name in stack.PARTS:
        assert name in result.stdout


def test_up_prints_urls_and_keys(stack: DevStack) -> None:
    result = runner.invoke(app, ["dev", "up"])

    assert result.exit_code == 0
    assert f"API URL: {stack.config.api_url}" in result.stdout
    assert keys.ANON_KEY in result.stdout
    assert keys.SERVICE_ROLE_KEY in result.stdout
