"""`trademind keys set | show | delete` and `trademind mode real | paper <trader>`: money settings.

Binance keys go straight into the encrypting RPC (set_binance_keys), read from prompts without echo and never
printed back; only the masked hint ever comes out. Real mode is per trader: the database refuses it without
stored keys or on a plan that does not allow it, and the confirmation names what changes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.markup import escape

from cli.console.api import Api
from cli.console.common import api, command, confirm, emit_json, err, find_trader, out
from cli.console.errors import ConsoleError
from cli.console.machine import restart_machine

keys_app = typer.Typer(help="Your Binance API keys (stored encrypted; shown masked).", no_args_is_help=True)


class TradingMode(StrEnum):
    """Mirrors the Postgres enum public.trading_mode."""

    PAPER = "paper"
    REAL = "real"


def keys_status(client: Api) -> dict[str, Any]:
    rows = client.rpc("binance_keys_status", {}, what="reading your key status")
    return rows[0] if rows else {"has_keys": False, "api_key_masked": None, "updated_at": None}


@keys_app.command("set")
@command
def set_keys() -> None:
    """Store your Binance API key and secret (asked without echo; replaces stored keys)."""
    api_key = typer.prompt("Binance API key", hide_input=True).strip()
    secret_key = typer.prompt("Binance secret key", hide_input=True).strip()
    with api() as client:
        client.rpc(
            "set_binance_keys", {"api_key": api_key, "secret_key": secret_key}, what="storing your keys"
        )
        status = keys_status(client)
    out.print(f"stored your Binance keys ({status['api_key_masked']}), encrypted")


@keys_app.command("show")
@command
def show_keys(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Whether keys are stored, and the API key's masked form."""
    with api() as client:
        status = keys_status(client)
    if as_json:
        emit_json(status)
    elif status["has_keys"]:
        out.print(f"Binance API key {status['api_key_masked']} (stored {status['updated_at']})")
    else:
        out.print("no Binance keys stored (trademind keys set)")


@keys_app.command("delete")
@command
def delete_keys(yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False) -> None:
    """Forget your keys; every real trader goes back to paper."""
    with api() as client:
        confirm("Delete your Binance keys and put every real trader back on paper?", assume_yes=yes)
        client.rpc("delete_binance_keys", {}, what="deleting your keys")
    out.print("deleted your Binance keys; all traders trade on paper")


def _refuse_real(client: Api) -> str:
    """The masked key when this account may trade for real; otherwise the one line saying why not."""
    account = client.one("users", {"select": "tier,subscription_status"}, what="reading your plan")
    status = keys_status(client)
    if not status["has_keys"]:
        raise ConsoleError("real mode needs your Binance API keys: store them first with trademind keys set")
    if account is None or account["tier"] == "free" or account["subscription_status"] != "active":
        plan = (
            f"{account['tier']} ({account['subscription_status'] or 'no subscription'})"
            if account
            else "none"
        )
        raise ConsoleError(
            f"real mode needs a paid plan (pro, elite or power) with an active subscription; yours: {plan}"
        )
    return str(status["api_key_masked"])


@command
def mode(
    new_mode: Annotated[
        TradingMode, typer.Argument(metavar="real|paper", help="Trade for real, or on paper.")
    ],
    trader: Annotated[str, typer.Argument(help="Trader id, id prefix (4+ characters) or exact name.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Switch one trader between paper and real trading (asks first, naming what changes)."""
    with api() as client:
        row = find_trader(client, trader, "id,name,trading_mode,risk")
        name = escape(row["name"])
        if row["trading_mode"] == new_mode:
            out.print(f"{name} trades {new_mode} already")
            return
        account = client.one("users", {"select": "real_trading_enabled"}, what="reading your account")
        machine = client.one(
            "fly_machines", {"select": "machine_id", "status": "neq.destroyed"}, what="reading your machine"
        )
        others_real = client.rows(
            "traders", {"select": "id", "trading_mode": "eq.real", "id": f"neq.{row['id']}"},
            what="reading your traders",
        )  # fmt: skip
        # The machine holds the keys exactly while the account trades real: switching that restarts it.
        account_real = new_mode is TradingMode.REAL or bool(others_real)
        switch_account = account is not None and account["real_trading_enabled"] != account_real
        restart = switch_account and machine is not None
        risk = row["risk"]
        if new_mode is TradingMode.REAL:
            masked = _refuse_real(client)
            question = (
                f"{row['name']} will place REAL orders on Binance with your API key {masked}: up to "
                f"${risk['max_position_size_usd']} per position, {risk['max_open_positions']} open at once, "
                f"no new entries after a ${risk['daily_loss_limit_usd']} loss in a day. Positions it "
                "already holds stay paper."
            )
            if restart:
                question += " Your machine restarts to load your keys."
            question += " While your machine trades real money, your paper traders open no new positions."
        else:
            question = (
                f"{row['name']} goes back to paper: new positions are simulated; positions it holds on "
                "Binance stay real until they close."
            )
            if restart:
                question += " It is your last real trader: your machine restarts without your keys."
            else:
                question += (
                    " Your other real traders keep the machine on real money, so this one opens no new"
                    " positions until they are back on paper too."
                )
        confirm(f"{question} Switch it to {new_mode}?", assume_yes=yes)
        if (
            switch_account and new_mode is TradingMode.REAL
        ):  # before the trader: the keys must reach the machine
            _set_account_real(client, True)
        client.write(
            "PATCH", "traders", params={"id": f"eq.{row['id']}"}, body={"trading_mode": str(new_mode)},
            what=f"switching {row['name']} to {new_mode}",
        )  # fmt: skip
        if switch_account and new_mode is TradingMode.PAPER:
            _set_account_real(client, False)
        out.print(f"{name} now trades [bold]{new_mode}[/]")
        if restart:
            with err.status("restarting your machine (waits until it is healthy again)...", spinner="dots"):
                answer = restart_machine(client)
            keys = "with your keys" if answer.get("realTrading") else "without keys"
            out.print(f"your machine {answer.get('machineId')} restarted {keys}")


def _set_account_real(client: Api, enabled: bool) -> None:
    client.write(
        "PATCH", "users", params={"id": f"eq.{client.user_id}"}, body={"real_trading_enabled": enabled},
        what=f"{'enabling' if enabled else 'disabling'} real trading on your account",
    )  # fmt: skip
