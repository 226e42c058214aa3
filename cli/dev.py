"""`trademind dev`: run the local Supabase stack (Postgres, PostgREST, Edge Functions, gateway)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from devstack.stack import DevStack

app = typer.Typer(
    help="Run the local Supabase stack; all its state lives under .devstack/.", no_args_is_help=True
)


def _stack() -> DevStack:
    from devstack.stack import DevStack

    return DevStack()


def _progress(message: str) -> None:
    typer.echo(f"  {message}", err=True)


def _fail(error: Exception) -> typer.Exit:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@app.command()
def up(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Start the stack (idempotent), apply pending migrations, and print its URLs and keys."""
    from devstack.errors import StackError
    from devstack.keys import JWT_SECRET

    stack = _stack()
    started = time.monotonic()
    try:
        stack.up(progress=(lambda _: None) if quiet else _progress)
    except StackError as error:
        raise _fail(error) from error
    if quiet:
        return
    config = stack.config
    typer.echo(f"TradeMind dev stack is up ({time.monotonic() - started:.1f}s).\n")
    for label, value in (
        ("API URL", config.api_url),
        ("REST URL", f"{config.api_url}/rest/v1"),
        ("Auth URL", f"{config.api_url}/auth/v1"),
        ("Functions URL", f"{config.api_url}/functions/v1"),
        ("Realtime URL", f"{config.api_url.replace('http', 'ws', 1)}/realtime/v1"),
        ("DB URL", config.db_url),
        ("JWKS URL", f"{config.api_url}/auth/v1/.well-known/jwks.json"),
        ("JWT secret", f"{JWT_SECRET} (legacy)"),
        ("anon key", config.anon_key),
        ("service_role key", config.service_role_key),
    ):
        typer.echo(f"{label:>16}: {value}")


@app.command()
def down() -> None:
    """Stop every process the stack started (by pid). Data is kept for the next `up`."""
    stopped = _stack().down(progress=_progress)
    typer.echo("stopped: " + ", ".join(stopped) if stopped else "nothing was running")


@app.command()
def status() -> None:
    """Show each part with its pid, port and log; exit 1 unless every part is running."""
    parts = _stack().status()
    for part in parts:
        state = (
            typer.style("running", fg=typer.colors.GREEN)
            if part.running
            else typer.style("stopped", fg=typer.colors.RED)
        )
        pid = str(part.pid) if part.pid else "-"
        port = str(part.port) if part.port else "-"
        typer.echo(f"{part.name:<10} {state:<18} pid {pid:<8} port {port:<6} log {part.log_path}")
    if not all(part.running for part in parts):
        raise typer.Exit(1)


@app.command()
def reset(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Drop the local database and re-apply every migration and the seed."""
    from devstack.errors import StackError

    if not yes:
        typer.confirm("This deletes all local data. Continue?", abort=True)
    try:
        _stack().reset(progress=_progress)
    except StackError as error:
        raise _fail(error) from error
    typer.echo("database reset")


@app.command()
def destroy(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Stop the stack and delete all its state (.devstack and its folders in /var/tmp)."""
    if not yes:
        typer.confirm("This deletes the local database and every other part's state. Continue?", abort=True)
    stack = _stack()
    stack.destroy()
    typer.echo(f"deleted {stack.config.state_dir}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def psql(ctx: typer.Context) -> None:
    """Open psql on the local database as postgres (extra arguments go to psql)."""
    binary = shutil.which("psql")
    if binary is None:
        raise _fail(FileNotFoundError("psql is not installed: apt-get install postgresql-client-15"))
    os.execv(binary, [binary, _stack().config.db_url, *ctx.args])  # noqa: S606 - psql replaces us


@app.command("test-db")
def test_db(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="pgTAP files or folders (default supabase/tests).")
    ] = None,
) -> None:
    """Run the pgTAP tests with pg_prove, as `supabase test db` does."""
    from devstack.pgtap import run_pg_prove

    stack = _stack()
    result = run_pg_prove(stack.config, paths or [stack.config.supabase_dir / "tests"])
    raise typer.Exit(result)


@app.command("lint-db")
def lint_db() -> None:
    """Lint with `supabase db lint --level warning` (plpgsql_check) and check `supabase migration list`.

    Exit 1 with one line per lint finding, per local migration the database has not applied, and per
    applied migration that has no file (the database came from another branch: `trademind dev reset`).
    """
    from devstack.errors import StackError
    from devstack.supabase_cli import SupabaseCli

    cli = SupabaseCli(_stack().config)
    try:
        findings = cli.lint()
        history = cli.migration_list()
    except StackError as error:
        raise _fail(error) from error
    problems = [f"supabase db lint: {finding.describe()}" for finding in findings]
    problems += [f"migration {row.local} is not applied" for row in history if row.remote is None]
    problems += [
        f"migration {row.remote} is applied but has no file in supabase/migrations (trademind dev reset)"
        for row in history
        if row.local is None
    ]
    for problem in problems:
        typer.secho(f"error: {problem}", fg=typer.colors.RED, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"supabase db lint: no findings; supabase migration list: all {len(history)} applied")


@app.command()
def jwt(
    role: Annotated[
        str, typer.Option(help="anon, authenticated, service_role or trader_machine.")
    ] = "authenticated",
    sub: Annotated[str | None, typer.Option(help="User id (the JWT sub claim).")] = None,
    machine_id: Annotated[
        str | None, typer.Option(help="machine_id claim, for trader_machine tokens.")
    ] = None,
    valid_for_secs: Annotated[int, typer.Option(help="Lifetime in seconds.")] = 3600,
) -> None:
    """Print a JWT signed with the local secret, e.g. for curl against the local API."""
    from devstack.keys import mint_jwt

    if sub is not None:
        try:
            uuid.UUID(sub)
        except ValueError as error:
            raise _fail(ValueError(f"--sub must be a UUID, got {sub!r}")) from error
    try:
        token = mint_jwt(
            role,
            sub,
            valid_for_secs=valid_for_secs,
            extra_claims={"machine_id": machine_id} if machine_id else None,
        )
    except ValueError as error:
        raise _fail(error) from error
    typer.echo(token)
