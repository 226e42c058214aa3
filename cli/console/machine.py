"""`trademind machine status | provision | restart | destroy`: the trader's own worker machine, through the
lifecycle Edge Functions called with the trader's session (each lets a user act on their own machine).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.console.api import Api
from cli.console.common import api, command, confirm, emit_json, err, out

app = typer.Typer(help="Your worker machine: status, provision, restart, destroy.", no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
YesOption = Annotated[bool, typer.Option("--yes", help="Do not ask.")]


def machine_status(client: Api) -> dict[str, Any]:
    """The machine row and, when one is live, its own health answer."""
    row = client.one(
        "fly_machines",
        {
            "select": "machine_id,status,version,region,memory_mb,last_heartbeat,created_at",
            "status": "neq.destroyed",
        },
        what="reading your machine",
    )
    if row is None:
        return {"machine": None, "health": None}
    report = client.call("check-machine-health", {}, what="checking your machine", timeout_secs=30)
    health = next(iter(report.get("machines", [])), None)
    return {"machine": row, "health": health}


def provision_machine(client: Api) -> dict[str, Any]:
    return client.call("provision-machine", {}, what="provisioning your machine")


def restart_machine(client: Api) -> dict[str, Any]:
    return client.call("restart-machine", {}, what="restarting your machine")


def destroy_machine(client: Api) -> dict[str, Any]:
    return client.call("destroy-machine", {"reason": "user_request"}, what="destroying your machine")


@app.command()
@command
def status(as_json: JsonOption = False) -> None:
    """Your machine's state, version, heartbeat and health."""
    with api() as client:
        report = machine_status(client)
    if as_json:
        emit_json(report)
        return
    row, health = report["machine"], report["health"] or {}
    if row is None:
        out.print("no machine: trademind machine provision (or create a strategy)")
        return
    verdict = (
        "[green]healthy[/]" if health.get("healthy") else f"[red]unhealthy[/] {health.get('error') or ''}"
    )
    out.print(
        f"machine {row['machine_id']} {row['status']} version {row['version'] or '-'} "
        f"region {row['region'] or '-'} "
        f"{row['memory_mb'] or '-'} MB: {verdict}"
    )
    if health:
        out.print(
            f"traders {health.get('activeTraders', '-')}, open positions {health.get('openPositions', '-')}, "
            f"heartbeat {health.get('heartbeatAgeSecs', '-')} s ago"
        )


@app.command()
@command
def provision(as_json: JsonOption = False) -> None:
    """Start your machine (nothing happens when it runs already)."""
    with api() as client, err.status("provisioning (waits for the machine to start)...", spinner="dots"):
        answer = provision_machine(client)
    if as_json:
        emit_json(answer)
        return
    out.print(f"{answer.get('status')}: machine {answer.get('machineId', '(being created)')}")


@app.command()
@command
def restart(yes: YesOption = False, as_json: JsonOption = False) -> None:
    """Restart your machine with fresh settings (it finishes in-flight work first)."""
    with api() as client:
        confirm("Restart your machine? Trading pauses for a few seconds.", assume_yes=yes)
        with err.status("restarting (waits until it is healthy again)...", spinner="dots"):
            answer = restart_machine(client)
    if as_json:
        emit_json(answer)
        return
    out.print(f"restarted machine {answer.get('machineId')}: version {answer.get('version')}, healthy")


@app.command()
@command
def destroy(yes: YesOption = False, as_json: JsonOption = False) -> None:
    """Stop and destroy your machine; your traders stop trading until a machine runs again."""
    with api() as client:
        confirm(
            "Destroy your machine? Every trader stops; open positions are no longer guarded.", assume_yes=yes
        )
        with err.status("shutting down and destroying...", spinner="dots"):
            answer = destroy_machine(client)
    if as_json:
        emit_json(answer)
        return
    out.print(
        f"destroyed {answer.get('machineId')} ({'graceful' if answer.get('graceful') else 'forced'}): "
        f"{answer.get('openPositions')} open position(s), {answer.get('watchingSignals')} watching signal(s)"
    )
