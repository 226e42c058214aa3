"""The `trademind` command: operator tools, and `trademind dev` for the local stack."""

from __future__ import annotations

import typer

from cli import demo, dev, machines

app = typer.Typer(
    name="trademind",
    help="TradeMind operator CLI.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(dev.app, name="dev")
app.add_typer(machines.app, name="machines")
app.command("demo")(demo.demo)


if __name__ == "__main__":
    app()
