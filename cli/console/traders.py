"""`trademind traders list | show | pause | resume | delete | edit`: the user's traders, through PostgREST.

Edits go to the database as they are: its CHECK constraints are the rules, and a refusal names the field.
The worker follows every change through Realtime.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from cli.console.api import Api
from cli.console.common import api, command, confirm, emit_json, find_trader, out, short_time
from cli.console.errors import ConsoleError, UsageProblem

app = typer.Typer(help="Your traders: list, show, pause, resume, delete, edit.", no_args_is_help=True)

TRADER_COLUMNS = (
    "id,name,status,error_message,trading_mode,description,symbols,timeframes,check_interval,"
    "reanalysis_interval,risk,signal_code,signal_code_version,ai_instructions,created_at,updated_at"
)
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
TraderArgument = Annotated[str, typer.Argument(help="Trader id, id prefix (4+ characters) or exact name.")]
STATUS_COLOURS = {"active": "green", "paused": "yellow", "error": "red"}


def status_text(trader: dict[str, Any]) -> str:
    colour = STATUS_COLOURS.get(trader["status"], "white")
    return f"[{colour}]{trader['status']}[/]"


def risk_text(risk: dict[str, Any]) -> str:
    return (
        f"${risk.get('max_position_size_usd')}/position, {risk.get('max_open_positions')} open max, "
        f"${risk.get('daily_loss_limit_usd')}/day loss limit"
    )


@app.command("list")
@command
def list_traders(
    status: Annotated[str | None, typer.Option(help="Only active, paused or error traders.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Your traders with their status, mode, symbols, interval and risk limits."""
    params = {"select": TRADER_COLUMNS, "order": "created_at"}
    if status:
        if status not in STATUS_COLOURS:
            raise UsageProblem(f"--status must be active, paused or error, not {status!r}")
        params["status"] = f"eq.{status}"
    with api() as client:
        rows = client.rows("traders", params, what="reading your traders")
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "name", "status", "mode", "symbols", "interval", "risk")
    for row in rows:
        table.add_row(
            str(row["id"])[:8], escape(row["name"]), status_text(row), row["trading_mode"],
            ",".join(row["symbols"]) if row["symbols"] else "default", row["check_interval"],
            risk_text(row["risk"]),
        )  # fmt: skip
    out.print(table)
    out.print(f"{len(rows)} trader(s)")


@app.command()
@command
def show(trader: TraderArgument, as_json: JsonOption = False) -> None:
    """One trader in full: settings, instructions and its signal code."""
    with api() as client:
        row = find_trader(client, trader, TRADER_COLUMNS)
    if as_json:
        emit_json(row)
        return
    out.print(f"[bold]{escape(row['name'])}[/]  {row['id']}  {status_text(row)}  mode {row['trading_mode']}")
    if row["error_message"]:
        out.print(f"[red]error:[/] {escape(row['error_message'])}")
    if row["description"]:
        out.print(f"description: {escape(row['description'])}")
    symbols = ", ".join(row["symbols"]) if row["symbols"] else "the default universe"
    out.print(f"symbols: {symbols}")
    out.print(
        f"timeframes: {', '.join(row['timeframes'])}; checks every {row['check_interval']}; "
        f"re-analysis every {row['reanalysis_interval']}"
    )
    out.print(f"risk: {risk_text(row['risk'])}")
    out.print(f"created {short_time(row['created_at'])}, updated {short_time(row['updated_at'])}")
    out.print("\n[bold]analysis instructions[/]")
    out.print(escape(row["ai_instructions"]))
    out.print(f"\n[bold]signal code[/] (version {row['signal_code_version']})")
    out.print(Syntax(row["signal_code"], "python", line_numbers=True, word_wrap=True))


def set_status(client: Api, trader: dict[str, Any], status: str) -> dict[str, Any]:
    rows = client.write(
        "PATCH", "traders", params={"id": f"eq.{trader['id']}"},
        body={"status": status, "error_message": None}, what=f"setting trader {trader['name']} {status}",
    )  # fmt: skip
    if not rows:
        raise ConsoleError(f"trader {trader['id']} is gone")
    return rows[0]


def _switch(reference: str, status: str, done: str) -> None:
    with api() as client:
        row = find_trader(client, reference, "id,name,status")
        if row["status"] == status:
            out.print(f"{escape(row['name'])} is {status} already")
            return
        set_status(client, row, status)
    out.print(f"{done} {escape(row['name'])} ({row['id']})")


@app.command()
@command
def pause(trader: TraderArgument) -> None:
    """Stop a trader from checking for signals (its open positions stay guarded)."""
    _switch(trader, "paused", "paused")


@app.command()
@command
def resume(trader: TraderArgument) -> None:
    """Let a paused trader (or one stopped by an error) check for signals again."""
    _switch(trader, "active", "resumed")


@app.command()
@command
def delete(
    trader: TraderArgument, yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False
) -> None:
    """Delete a trader and its history (signals, positions, trades); refused while it has open positions."""
    with api() as client:
        row = find_trader(client, trader, "id,name")
        signals = client.rows(
            "signals", {"select": "id,status,positions(status)", "trader_id": f"eq.{row['id']}"},
            what="reading the trader's signals",
        )  # fmt: skip
        open_positions = sum(
            1 for signal in signals for position in signal["positions"] if position["status"] == "open"
        )
        if open_positions:
            raise ConsoleError(
                f"{row['name']} has {open_positions} open position(s): pause it and let them close first"
            )
        confirm(
            f"Delete trader {row['name']} ({row['id']}) and its {len(signals)} signal(s) with their closed "
            "positions and trades?",
            assume_yes=yes,
        )
        client.write("DELETE", "traders", params={"id": f"eq.{row['id']}"}, what=f"deleting {row['name']}")
    out.print(f"deleted {escape(row['name'])}")


def _decimal(option: str, text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(text)
    except InvalidOperation as error:
        raise UsageProblem(f"{option} must be a number, not {text!r}") from error


def _list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


@app.command()
@command
def edit(  # noqa: PLR0917 - typer maps each option to a parameter
    trader: TraderArgument,
    name: Annotated[str | None, typer.Option(help="A new name.")] = None,
    symbols: Annotated[
        str | None,
        typer.Option(help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT; 'default' for the universe."),
    ] = None,
    timeframes: Annotated[str | None, typer.Option(help="Comma-separated timeframes, e.g. 15m,1h.")] = None,
    interval: Annotated[str | None, typer.Option(help="How often it checks: 1m, 15m, 1h_close, ...")] = None,
    reanalysis_interval: Annotated[
        str | None, typer.Option(help="How often open trades are re-analysed.")
    ] = None,
    max_position_usd: Annotated[str | None, typer.Option(help="Largest position, in USD.")] = None,
    max_open_positions: Annotated[str | None, typer.Option(help="Most positions open at once.")] = None,
    daily_loss_limit_usd: Annotated[
        str | None, typer.Option(help="Stop opening after this loss in a day.")
    ] = None,
    instructions: Annotated[str | None, typer.Option(help="New analysis instructions for the AI.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Change a trader's symbols, interval, risk limits, name or instructions (the database checks them)."""
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    if symbols is not None:
        changes["symbols"] = None if symbols.strip().lower() == "default" else _list(symbols.upper())
    if timeframes is not None:
        changes["timeframes"] = _list(timeframes)
    if interval is not None:
        changes["check_interval"] = interval
    if reanalysis_interval is not None:
        changes["reanalysis_interval"] = reanalysis_interval
    if instructions is not None:
        changes["ai_instructions"] = instructions
    risk = {
        "max_position_size_usd": _decimal("--max-position-usd", max_position_usd),
        "max_open_positions": _decimal("--max-open-positions", max_open_positions),
        "daily_loss_limit_usd": _decimal("--daily-loss-limit-usd", daily_loss_limit_usd),
    }
    if not changes and all(value is None for value in risk.values()):
        raise UsageProblem("nothing to change: give at least one option (trademind traders edit --help)")
    with api() as client:
        row = find_trader(client, trader, "id,name,risk")
        if any(value is not None for value in risk.values()):
            merged = {**row["risk"], **{key: value for key, value in risk.items() if value is not None}}
            # JSON numbers (the risk check wants numbers, and a Decimal would go as a string).
            changes["risk"] = {key: _number(value) for key, value in merged.items()}
        updated = client.write(
            "PATCH", "traders", params={"id": f"eq.{row['id']}", "select": TRADER_COLUMNS}, body=changes,
            what=f"updating {row['name']}",
        )  # fmt: skip
    if as_json:
        emit_json(updated[0])
        return
    changed = ", ".join(sorted(changes))
    out.print(f"updated {escape(updated[0]['name'])}: {changed}")


def _number(value: Any) -> int | float:
    number = Decimal(str(value))
    return int(number) if number == number.to_integral_value() else float(number)
