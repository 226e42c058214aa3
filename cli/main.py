"""The `trademind` command: the trader's console (account, strategies, traders, history, money, machine, the
dashboard), operator tools (`trademind machines`), and `trademind dev` for the local stack.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli import demo, dev, machines
from cli.console import account, backtest, chat, machine, money, records, strategies, traders
from cli.console.common import choose_profile, command

app = typer.Typer(
    name="trademind",
    help="TradeMind: your AI trading agents. Run without a command for the live dashboard.",
    add_completion=False,
    invoke_without_command=True,
)


@app.callback()
def main(
    context: typer.Context,
    profile: Annotated[
        str,
        typer.Option(
            "--profile", envvar="TRADEMIND_PROFILE", help="Which saved profile (project and session)."
        ),
    ] = "default",
) -> None:
    choose_profile(profile)
    if context.invoked_subcommand is None:
        monitor()


@app.command()
@command
def monitor() -> None:
    """The live dashboard: markets, traders, positions, signals, AI decisions, trades, logs, chat, machine."""
    from cli.console.dashboard.app import run_dashboard

    run_dashboard()


app.command()(account.login)
app.command()(account.signup)
app.command()(account.logout)
app.command()(account.whoami)
app.add_typer(strategies.app, name="strategy")
app.add_typer(traders.app, name="traders")
records.register(app)
app.command()(chat.ask)
app.add_typer(money.keys_app, name="keys")
app.command()(money.mode)
app.add_typer(machine.app, name="machine")
app.add_typer(machines.app, name="machines", help="Operate every user's worker machine (service_role).")
app.add_typer(dev.app, name="dev")
app.command("demo")(demo.demo)
app.command("backtest")(backtest.backtest)


if __name__ == "__main__":
    app()
