"""`trademind ask "<question>" --trader X | --position Y`: the AI answers about one trader or position."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from cli.console.api import Api
from cli.console.common import api, command, emit_json, err, find_position, find_trader, out
from cli.console.errors import UsageProblem


def ask_ai(client: Api, question: str, *, trader_id: str | None = None, position_id: str | None = None,
           conversation: list[dict[str, str]] | None = None) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {"question": question}
    if trader_id:
        body["traderId"] = trader_id
    if position_id:
        body["positionId"] = position_id
    if conversation:
        body["conversation"] = conversation
    return client.call("ask", body, what="asking the AI")


@command
def ask(
    question: Annotated[str, typer.Argument(help="Your question, in plain words.")],
    trader: Annotated[
        str | None, typer.Option("--trader", help="About this trader (id, prefix or name).")
    ] = None,
    position: Annotated[
        str | None, typer.Option("--position", help="About this position (id or prefix).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Ask the AI about one of your traders or positions (uses your daily AI budget)."""
    if not trader and not position:
        raise UsageProblem("say what the question is about: --trader <id> or --position <id>")
    with api() as client:
        trader_id = str(find_trader(client, trader, "id")["id"]) if trader else None
        position_id = find_position(client, position) if position else None
        with err.status("thinking...", spinner="dots"):
            answer = ask_ai(client, question, trader_id=trader_id, position_id=position_id)
    if as_json:
        emit_json(answer)
        return
    out.print(escape(answer["answer"]))
