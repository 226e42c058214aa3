"""`trademind strategy new "<description>"`: generate-strategy writes the code; the trader reads, then saves.

The function is asked for a preview (`save: false`); the console shows the code, the instructions, the
timeframes and the interval, and on yes saves the trader as the user through PostgREST (the database's
rules apply) and asks provision-machine for the user's machine.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax

from cli.console import backtest as backtests
from cli.console.api import Api
from cli.console.common import api, command, confirm, emit_json, err, out
from cli.console.errors import ConsoleError

app = typer.Typer(help="Create strategies from plain words.", no_args_is_help=True)


def show_strategy(strategy: dict[str, Any]) -> None:
    symbols = ", ".join(strategy["symbols"]) if strategy.get("symbols") else "the default universe"
    out.print(f"[bold]{escape(strategy['name'])}[/]")
    out.print(
        f"symbols: {symbols}; timeframes: {', '.join(strategy['timeframes'])}; checks every "
        f"{strategy['recommendedInterval']}; re-analysis every {strategy['reanalysisInterval']}"
    )
    out.print(
        Panel(
            Syntax(strategy["signalCode"], "python", line_numbers=True, word_wrap=True), title="signal code"
        )
    )
    out.print(Panel(escape(strategy["aiInstructions"]), title="analysis instructions"))


def save_trader(client: Api, strategy: dict[str, Any], description: str) -> dict[str, Any]:
    """Insert the trader as the user (RLS), then make sure the user has a machine to run it."""
    row = {
        "user_id": client.user_id,
        "name": strategy["name"],
        "description": description,
        "signal_code": strategy["signalCode"],
        "ai_instructions": strategy["aiInstructions"],
        "timeframes": strategy["timeframes"],
        "check_interval": strategy["recommendedInterval"],
        "reanalysis_interval": strategy["reanalysisInterval"],
        "symbols": strategy["symbols"],
    }
    saved = client.write("POST", "traders", body=row, params={"select": "id,name"}, what="saving the trader")
    return saved[0]


def ensure_machine(client: Api) -> str:
    """provision-machine for the user; the sentence says what happened (a refusal is not an error here)."""
    try:
        with err.status("making sure your machine runs (this can take a minute)...", spinner="dots"):
            answer = client.call("provision-machine", {}, what="provisioning your machine")
    except ConsoleError as error:
        return f"no machine runs it yet: {error}"
    if answer.get("status") == "in_progress":
        return "your machine is being provisioned"
    return f"your machine {answer.get('machineId')} runs it ({answer.get('status')})"


@app.command("new")
@command
def new(
    description: Annotated[str, typer.Argument(help="The strategy in plain words.")],
    name: Annotated[str | None, typer.Option(help="The trader's name (default: the model's).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Save without asking.")] = False,
    backtest: Annotated[
        bool,
        typer.Option("--backtest", help="Backtest it over the recorded history before saving (--ai off)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (implies --yes).")] = False,
) -> None:
    """Turn a description into signal code and analysis instructions, show them, and save the trader."""
    body: dict[str, Any] = {"description": description, "save": False}
    if name:
        body["name"] = name
    with api() as client:
        with err.status("asking the AI for a strategy...", spinner="dots"):
            answer = client.call("generate-strategy", body, what="generating the strategy")
        strategy = answer["trader"]
        if not as_json:
            show_strategy(strategy)
        tested = backtests.preview(client, strategy, quiet=as_json) if backtest else None
        confirm(f"Save {strategy['name']} as a trader and start it?", assume_yes=yes or as_json)
        trader = save_trader(client, strategy, description)
        saved_backtest = backtests.save(client, tested[0], str(trader["id"])) if tested else None
        machine = ensure_machine(client)
    if as_json:
        result = {
            "trader": {**strategy, "id": trader["id"]},
            "machine": machine,
            "usage": answer.get("usage"),
        }
        if tested:
            result["backtest"] = {**tested[0].as_json(), "id": saved_backtest, "chart": str(tested[1])}
        emit_json(result)
        return
    out.print(f"[green]saved[/] {escape(trader['name'])} ({trader['id']}); {escape(machine)}")
    out.print(f"watch it: trademind monitor   pause it: trademind traders pause {str(trader['id'])[:8]}")
