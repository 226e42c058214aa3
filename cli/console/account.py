"""`trademind login | signup | logout | whoami`: the trader's own Supabase Auth session, in their profile."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from cli.console import auth
from cli.console.api import Api
from cli.console.common import api, command, emit_json, err, out, profile
from cli.console.errors import ConsoleError, UsageProblem
from cli.console.session import Endpoint

EmailOption = Annotated[str | None, typer.Option(help="Your email (asked for when not given).")]
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", help="The project's API URL, saved in the profile (default: TRADEMIND_URL, else local)."
    ),
]
AnonKeyOption = Annotated[
    str | None, typer.Option("--anon-key", help="The project's anon key, saved in the profile.")
]


def _endpoint(url: str | None, anon_key: str | None) -> Endpoint:
    if url or anon_key:
        if url and not url.startswith(("http://", "https://")):
            raise UsageProblem(f"--url must start with http:// or https://, not {url!r}")
        profile().save_endpoint(url, anon_key)
    return profile().endpoint()


def _password(confirmation: bool) -> str:
    from_env = os.environ.get("TRADEMIND_PASSWORD")
    if from_env:
        return from_env
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=confirmation)
    return password


@command
def login(email: EmailOption = None, url: UrlOption = None, anon_key: AnonKeyOption = None) -> None:
    """Sign in with your email and password; the session is kept in your profile (mode 0600)."""
    endpoint = _endpoint(url, anon_key)
    address = email or typer.prompt("Email")
    session = auth.sign_in(endpoint, address.strip(), _password(confirmation=False))
    profile().save_session(session)
    out.print(f"signed in as [bold]{session.email}[/] ({endpoint.url}, profile {profile().name})")


@command
def signup(email: EmailOption = None, url: UrlOption = None, anon_key: AnonKeyOption = None) -> None:
    """Create your account and sign in."""
    endpoint = _endpoint(url, anon_key)
    address = email or typer.prompt("Email")
    session = auth.sign_up(endpoint, address.strip(), _password(confirmation=True))
    profile().save_session(session)
    out.print(f"welcome, [bold]{session.email}[/]: you are signed in (profile {profile().name})")
    out.print('next: trademind strategy new "Buy BTC when RSI(14) on 1h drops below 30"')


@command
def logout() -> None:
    """End the session on the server and forget it here."""
    current = profile()
    session = current.session()
    if session is None:
        out.print(f"not signed in (profile {current.name})")
        return
    try:
        auth.sign_out(current.endpoint(), session)
    except ConsoleError as error:
        # The local copy goes either way: a session the server no longer knows is already over.
        err.print(f"[yellow]warning:[/] the server did not confirm the sign-out ({error})")
    current.clear_session()
    out.print(f"signed out {session.email or session.user_id}")


@command
def whoami(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Who is signed in: plan, trading settings, machine, and this month's cost."""
    with api() as client:
        user = client.one(
            "users",
            {"select": "id,email,tier,subscription_status,paper_trading_enabled,real_trading_enabled,"
                       "paper_starting_balance_usd"},
            what="reading your account",
        )  # fmt: skip
        if user is None:
            raise ConsoleError("your account has no user row yet: sign up again or ask support")
        machine = client.one(
            "fly_machines",
            {"select": "machine_id,status,version,region,last_heartbeat", "status": "neq.destroyed"},
            what="reading your machine",
        )
        cost = _month_to_date_cost(client)
        report: dict[str, Any] = {
            "user": user,
            "profile": client.profile.name,
            "url": client.endpoint.url,
            "sessionExpiresAt": datetime.fromtimestamp(client.session.expires_at, UTC).isoformat(),
            "machine": machine,
            "monthToDateCost": cost,
        }
    if as_json:
        emit_json(report)
        return
    mode = "real and paper" if user["real_trading_enabled"] else "paper"
    out.print(f"[bold]{user['email']}[/]  id {user['id']}")
    out.print(f"plan {user['tier']} ({user['subscription_status'] or 'no subscription'}), trading: {mode}")
    if machine:
        out.print(f"machine {machine['machine_id']} {machine['status']} version {machine['version'] or '-'}")
    else:
        out.print("machine: none (trademind machine provision)")
    if cost is not None:
        out.print(
            f"this month: ${cost['total_cost_usd']} "
            f"(machine ${cost['machine_cost_usd']}, AI ${cost['ai_cost_usd']})"
        )
    out.print(
        f"profile {client.profile.name} -> {client.endpoint.url}; session until {report['sessionExpiresAt']}"
    )


def _month_to_date_cost(client: Api) -> dict[str, Any] | None:
    return client.one(
        "user_costs_month_to_date",
        {"select": "month,machine_cost_usd,ai_cost_usd,total_cost_usd"},
        what="reading this month's cost",
    )
