"""The `trademind dev` commands as a person types them."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from devstack import keys, supabase_cli
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

    claims = keys.decode(result.stdout.strip())
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


def test_lint_db_passes_on_the_repository_schema(stack: DevStack) -> None:
    result = runner.invoke(app, ["dev", "lint-db"])

    assert result.exit_code == 0, result.stderr
    assert "supabase db lint: no findings; supabase migration list: all" in result.stdout


def test_lint_db_names_a_finding_and_a_migration_the_database_lacks(
    stack: DevStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs against a copy of the project with one unapplied migration and one broken function."""
    skip_functions = shutil.ignore_patterns("functions")
    shutil.copytree(stack.config.supabase_dir, tmp_path / "supabase", ignore=skip_functions)
    (tmp_path / "supabase" / "migrations" / "29991231235959_add_later.sql").write_text("select 1;")
    copy_cli = functools.partial(supabase_cli.SupabaseCli, workdir=tmp_path)
    monkeypatch.setattr(supabase_cli, "SupabaseCli", copy_cli)
    with stack.postgres.connect(autocommit=True) as conn:
        conn.execute(
            "create function public.lint_probe() returns int language plpgsql as $$\n"
            "begin\n  return (select missing_column from public.traders limit 1);\nend $$"
        )
    try:
        result = runner.invoke(app, ["dev", "lint-db"])
    finally:
        with stack.postgres.connect(autocommit=True) as conn:
            conn.execute("drop function public.lint_probe()")

    assert result.exit_code == 1
    finding = 'line 3: error [42703]: column "missing_column" does not exist (in: RETURN)'
    assert f"error: supabase db lint: public.lint_probe at {finding}" in result.stderr
    assert "error: migration 29991231235959 is not applied" in result.stderr


def test_destroy_asks_first_and_keeps_everything_when_told_no(stack: DevStack) -> None:
    result = runner.invoke(app, ["dev", "destroy"], input="n\n")

    assert result.exit_code == 1
    assert "This deletes the local database" in result.stdout
    assert stack.is_up() and stack.config.state_dir.exists()
