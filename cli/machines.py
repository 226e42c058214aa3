"""`trademind machines`: list, provision, destroy, roll out and health-check the users' worker machines.

Talks to Supabase (PostgREST and the lifecycle Edge Functions) with the operator's service_role key from
SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY, or the local dev stack with --local.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(help="Operate the users' worker machines (service_role).", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)

FUNCTION_TIMEOUT_SECS = 160.0  # the gateway allows 150 s per function call
STRATEGIES = ("rolling", "canary", "immediate")


class OperatorError(Exception):
    """Something the operator must fix or know; printed as one line, exit 1."""


@dataclass(frozen=True)
class Backend:
    """Where the operator's requests go."""

    url: str
    service_key: str

    def client(self, timeout_secs: float = 30.0) -> httpx.Client:
        headers = {"apikey": self.service_key, "Authorization": f"Bearer {self.service_key}"}
        return httpx.Client(base_url=self.url.rstrip("/"), headers=headers, timeout=timeout_secs)


_use_local = False
_backend: Backend | None = None


@app.callback()
def choose_backend(
    local: Annotated[
        bool, typer.Option("--local", help="Use the local dev stack (trademind dev up).")
    ] = False,
) -> None:
    global _use_local, _backend  # one backend per CLI invocation, chosen by the group's options
    _use_local, _backend = local, None


def backend() -> Backend:
    """The project the command talks to, resolved when a command first needs it (so `--help` needs none)."""
    global _backend  # noqa: PLW0603 - resolved once per CLI invocation
    if _backend is None:
        _backend = _resolve_backend(_use_local)
    return _backend


def _resolve_backend(local: bool) -> Backend:
    if local:
        from devstack.config import StackConfig

        config = StackConfig.load()
        return Backend(config.api_url, config.service_role_key)
    url, key = os.environ.get("SUPABASE_URL"), os.environ.get("SUPABASE_SERVICE_ROLE_KEY")
    missing = [
        name for name, value in (("SUPABASE_URL", url), ("SUPABASE_SERVICE_ROLE_KEY", key)) if not value
    ]
    if missing:
        errors.print(
            f"[red]error:[/] set {' and '.join(missing)} (the operator's service key), or pass --local"
        )
        raise typer.Exit(2)
    return Backend(str(url), str(key))


# Requests -----------------------------------------------------------------------------------------------
def call_function(
    name: str, body: dict[str, Any], timeout_secs: float = FUNCTION_TIMEOUT_SECS
) -> dict[str, Any]:
    """POST to an Edge Function; a non-2xx answer becomes OperatorError with the function's own message."""
    try:
        with backend().client(timeout_secs) as client:
            response = client.post(f"/functions/v1/{name}", json=body)
    except httpx.TransportError as error:
        raise OperatorError(f"{name}: cannot reach {backend().url} ({type(error).__name__})") from error
    payload = _json(response)
    if response.status_code >= 400:
        problem = payload.get("error", {}) if isinstance(payload, dict) else {}
        message = problem.get("message") if isinstance(problem, dict) else None
        raise OperatorError(f"{name}: {response.status_code} {message or response.text[:200]}")
    return payload if isinstance(payload, dict) else {"result": payload}


def rest_get(path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    try:
        with backend().client() as client:
            response = client.get(f"/rest/v1/{path}", params=params)
    except httpx.TransportError as error:
        raise OperatorError(f"cannot reach {backend().url} ({type(error).__name__})") from error
    if response.status_code >= 400:
        raise OperatorError(f"reading {path}: {response.status_code} {response.text[:200]}")
    rows = _json(response)
    return rows if isinstance(rows, list) else []


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except json.JSONDecodeError:
        return {}


def resolve_user(user: str) -> str:
    """A user id, given an id or an email."""
    try:
        return str(uuid.UUID(user))
    except ValueError:
        pass
    rows = rest_get("users", {"select": "id", "email": f"eq.{user.lower()}"})
    if not rows:
        raise OperatorError(f"no user with id or email {user!r}")
    return str(rows[0]["id"])


def live_machines() -> list[dict[str, Any]]:
    return rest_get(
        "fly_machines",
        {
            "select": (
                "user_id,machine_id,status,version,region,cpus,memory_mb,last_heartbeat,users(email,tier)"
            ),
            "status": "neq.destroyed",
            "order": "created_at",
        },
    )


def month_to_date_costs(user_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each user's cost this UTC month (public.user_costs_month_to_date), by user id."""
    if not user_ids:
        return {}
    rows = rest_get(
        "user_costs_month_to_date",
        {
            "select": (
                "user_id,machine_seconds,machine_cost_usd,ai_cost_usd,total_cost_usd,monthly_budget_usd"
            ),
            "user_id": f"in.({','.join(sorted(set(user_ids)))})",
        },
    )
    return {str(row.pop("user_id")): row for row in rows}


def usd(value: Any) -> str:
    return "-" if value is None else f"${float(value):,.2f}"


def heartbeat_age(last_heartbeat: str | None) -> str:
    if not last_heartbeat:
        return "never"
    age = datetime.now(UTC) - datetime.fromisoformat(last_heartbeat)
    return f"{age.total_seconds():.0f}s"


def run(action: Any) -> Any:
    """Run a command body, turning OperatorError into one red line and exit 1."""
    try:
        return action()
    except OperatorError as error:
        errors.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from error


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


# Commands -----------------------------------------------------------------------------------------------
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("list")
def list_machines(as_json: JsonOption = False) -> None:
    """Every machine that is not destroyed: user, state, version, size, heartbeat age, month-to-date cost."""

    def action() -> list[dict[str, Any]]:
        machines = live_machines()
        costs = month_to_date_costs([str(row["user_id"]) for row in machines])
        for row in machines:
            row["cost_month_to_date"] = costs.get(str(row["user_id"]))
        return machines

    rows = run(action)
    if as_json:
        emit_json(rows)
        return
    table = Table(
        "user", "email", "tier", "machine", "status", "version", "region", "size", "heartbeat age",
        "machine $", "AI $", "MTD $", "budget $",
    )  # fmt: skip
    for row in rows:
        user = row.get("users") or {}
        cost = row.get("cost_month_to_date") or {}
        size = f"{row.get('cpus') or '-'}x{row.get('memory_mb') or '-'}MB"
        table.add_row(
            row["user_id"], user.get("email") or "-", user.get("tier") or "-", row["machine_id"],
            row["status"], row.get("version") or "-", row.get("region") or "-", size,
            heartbeat_age(row.get("last_heartbeat")), usd(cost.get("machine_cost_usd")),
            usd(cost.get("ai_cost_usd")), usd(cost.get("total_cost_usd")),
            usd(cost.get("monthly_budget_usd")),
        )  # fmt: skip
    console.print(table)
    total = sum(float((row.get("cost_month_to_date") or {}).get("total_cost_usd") or 0) for row in rows)
    console.print(f"{len(rows)} machine(s), {usd(total)} month to date")


@app.command()
def provision(
    user: Annotated[str, typer.Argument(help="User id or email.")],
    region: Annotated[
        str | None, typer.Option(help="Fly region (default: the user's preferred region).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Provision the user's machine (idempotent: an existing live machine is returned)."""

    def action() -> dict[str, Any]:
        body: dict[str, Any] = {"userId": resolve_user(user)}
        if region:
            body["region"] = region
        with console.status("provisioning (waits for the machine to start)...", spinner="dots"):
            return call_function("provision-machine", body)

    result = run(action)
    if as_json:
        emit_json(result)
        return
    console.print(f"[green]{result.get('status')}[/] machine {result.get('machineId', '-')}")


@app.command()
def destroy(
    user: Annotated[str, typer.Argument(help="User id or email.")],
    reason: Annotated[str, typer.Option(help="Recorded with the shutdown.")] = "user_request",
    as_json: JsonOption = False,
) -> None:
    """Shut the user's machine down gracefully and destroy it; prints its final state."""

    def action() -> dict[str, Any]:
        body = {"userId": resolve_user(user), "reason": reason}
        with console.status("shutting down and destroying...", spinner="dots"):
            return call_function("destroy-machine", body)

    result = run(action)
    if as_json:
        emit_json(result)
        return
    console.print(
        f"destroyed {result.get('machineId')} ({'graceful' if result.get('graceful') else 'forced'}): "
        f"{result.get('openPositions')} open position(s), {result.get('watchingSignals')} watching signal(s)"
    )


@app.command()
def update(  # noqa: PLR0917 - typer maps each option to a parameter
    image: Annotated[
        str, typer.Option(help="Image reference or tag, e.g. registry.fly.io/trademind-workers:v42.")
    ],
    max_unavailable: Annotated[int, typer.Option(min=1, max=100, help="Machines restarted at once.")] = 1,
    strategy: Annotated[
        str, typer.Option(help="rolling, canary (one first) or immediate (all at once).")
    ] = "rolling",
    continue_on_failure: Annotated[bool, typer.Option(help="Go on after a machine fails.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only: show the batches.")] = False,
    users: Annotated[
        list[str] | None, typer.Option("--user", help="Only these users (id or email; repeat).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Roll a new image out to every machine (or --user ones), with live progress; exit 1 if any failed."""
    if strategy not in STRATEGIES:
        errors.print(f"[red]error:[/] --strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
        raise typer.Exit(2)
    body = {
        "image": image,
        "maxUnavailable": max_unavailable,
        "strategy": strategy,
        "continueOnFailure": continue_on_failure,
        "dryRun": dry_run,
    }
    if users:
        body["userIds"] = run(lambda: [resolve_user(user) for user in users])
    report = run(lambda: _rollout(body, show_progress=not as_json))
    if as_json:
        emit_json(report)
    else:
        _print_rollout(report)
    if not report.get("success"):
        raise typer.Exit(1)


def _rollout(body: dict[str, Any], *, show_progress: bool) -> dict[str, Any]:
    """Call update-machines until the rollout is complete (each call resumes where the last stopped)."""
    if body["dryRun"]:
        return call_function("update-machines", body)
    in_scope = [
        row for row in live_machines() if body.get("userIds") is None or row["user_id"] in body["userIds"]
    ]
    total = len(in_scope)
    tag = body["image"].rsplit(":", 1)[-1]  # a machine reports its image tag as its version
    results: dict[str, dict[str, Any]] = {}
    report: dict[str, Any] = {}
    with Progress(
        TextColumn("[bold]rolling out"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), console=console, disable=not show_progress, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("", total=total)
        while True:
            done = threading.Event()
            outcome: dict[str, Any] = {}
            worker = threading.Thread(
                target=_call_into, args=("update-machines", body, outcome, done), daemon=True
            )
            worker.start()
            while not done.wait(0.5):
                scope = {row["machine_id"] for row in in_scope}
                on_image = sum(
                    1 for row in live_machines() if row["machine_id"] in scope and row.get("version") == tag
                )
                progress.update(task, completed=on_image, description=f"{on_image}/{total} on the new image")
            worker.join()
            if "error" in outcome:
                raise outcome["error"]
            report = outcome["report"]
            for machine in report.get("machines", []):
                if machine["machineId"] not in results or machine["status"] != "skipped":
                    results[machine["machineId"]] = machine
            summary = report.get("summary", {})
            progress.update(
                task, completed=sum(1 for r in results.values() if r["status"] in ("updated", "skipped"))
            )
            if report.get("complete") or summary.get("failed") or not summary.get("pending"):
                break
    report["machines"] = list(results.values())
    counts = {
        status: sum(1 for r in results.values() if r["status"] == status)
        for status in ("updated", "failed", "skipped", "pending")
    }
    rollbacks = [r["rollback"]["status"] for r in results.values() if r.get("rollback")]
    counts |= {"rolledBack": rollbacks.count("rolled_back"), "rollbackFailed": rollbacks.count("failed")}
    report["summary"] = {"total": len(results), **counts}
    report["success"] = counts["failed"] == 0 and counts["pending"] == 0
    return report


def _call_into(name: str, body: dict[str, Any], outcome: dict[str, Any], done: threading.Event) -> None:
    """Thread body: call a function, leave its report (or error) in `outcome`, then set `done`."""
    try:
        outcome["report"] = call_function(name, body)
    except OperatorError as error:
        outcome["error"] = error
    finally:
        done.set()


def _print_rollout(report: dict[str, Any]) -> None:
    table = Table("batch", "user", "machine", "from", "to", "outcome", "stage / error", "seconds")
    colours = {"updated": "green", "skipped": "dim", "failed": "red", "pending": "yellow"}
    for machine in sorted(report.get("machines", []), key=lambda m: (m.get("batch", 0), m["machineId"])):
        status = machine["status"]
        outcome = f"[{colours.get(status, 'white')}]{status}[/]"
        detail = machine.get("error") or machine.get("stage") or ""
        if rollback := machine.get("rollback"):
            # A failed machine is put back on its previous version; say whether that worked.
            if rollback["status"] == "rolled_back":
                outcome += f", [yellow]rolled back to {rollback['version']}[/]"
            else:
                outcome += ", [red bold]rollback failed[/]"
                detail += f"; rollback: {rollback.get('error') or rollback.get('stage')}"
        seconds = f"{machine['durationMs'] / 1000:.1f}" if machine.get("durationMs") is not None else "-"
        table.add_row(
            str(machine.get("batch", "-")), machine["userId"], machine["machineId"],
            machine.get("fromVersion") or "-", machine.get("toVersion") or "-", outcome, detail, seconds,
        )  # fmt: skip
    console.print(table)
    summary = report.get("summary", {})
    verdict = "[green]rollout complete[/]" if report.get("success") else "[red]rollout did not complete[/]"
    if report.get("dryRun"):
        verdict = "[cyan]dry run: nothing changed[/]"
    console.print(
        f"{verdict}: {summary.get('updated', 0)} updated, {summary.get('failed', 0)} failed "
        f"({summary.get('rolledBack', 0)} rolled back, {summary.get('rollbackFailed', 0)} rollback failed), "
        f"{summary.get('skipped', 0)} skipped, {summary.get('pending', 0)} pending"
    )


@app.command()
def health(as_json: JsonOption = False) -> None:
    """Ask every running machine for /health; exit 1 if any is unhealthy."""

    def action() -> dict[str, Any]:
        with console.status("checking every machine...", spinner="dots"):
            return call_function("check-machine-health", {})

    report = run(action)
    if as_json:
        emit_json(report)
    else:
        emails = {row["user_id"]: (row.get("users") or {}).get("email") for row in run(live_machines)}
        table = Table(
            "user", "machine", "state", "version", "traders", "open positions", "heartbeat age", "healthy?"
        )
        for machine in report.get("machines", []):
            age = machine.get("heartbeatAgeSecs")
            table.add_row(
                emails.get(machine["userId"]) or machine["userId"], machine["machineId"],
                f"{machine.get('state')}/{machine.get('status')}", machine.get("version") or "-",
                _count(machine.get("activeTraders")), _count(machine.get("openPositions")),
                f"{age:.0f}s" if age is not None else "never",
                "[green]yes[/]" if machine.get("healthy") else f"[red]no[/] {machine.get('error') or ''}",
            )  # fmt: skip
        console.print(table)
        summary = report.get("summary", {})
        console.print(f"{summary.get('healthy', 0)}/{summary.get('total', 0)} healthy")
    if not report.get("success"):
        raise typer.Exit(1)


def _count(value: Any) -> str:
    return "-" if value is None else str(value)
