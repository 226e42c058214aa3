"""`trademind positions | trades | signals | analyses`: the trader's history, table, JSON, CSV.

Each listing is one PostgREST query as the user (RLS shows only theirs); `--trader` filters through the
row's signal, which carries the trader.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cli.console.common import api, command, emit_json, find_trader, out, parse_since, short_time, write_csv
from cli.console.errors import UsageProblem


@dataclass(frozen=True, slots=True)
class Listing:
    """What one record command reads and shows."""

    table: str
    noun: str
    select: str
    time_column: str
    statuses: tuple[str, ...]
    columns: tuple[str, ...]  # table and CSV columns, in order
    trader_filter: str  # PostgREST column path that holds the trader id
    table_columns: tuple[str, ...]  # what fits a terminal (80 columns); positions show the id `ask` takes
    status_column: str = "status"


LISTINGS = {
    "positions": Listing(
        "positions", "position",
        "id,symbol,side,type,status,entry_price,size,stop_loss,take_profit,exit_price,realized_pnl,fees_paid,pnl,"
        "pnl_percent,opened_at,closed_at,close_reason,signal_id,signals!inner(trader_id)",
        "opened_at", ("open", "closed"),
        ("id", "symbol", "side", "type", "status", "entry_price", "size", "stop_loss", "take_profit",
         "exit_price",
         "pnl", "pnl_percent", "fees_paid", "opened_at", "closed_at", "close_reason"),
        "signals.trader_id",
        ("id", "opened_at", "symbol", "side", "status", "entry_price", "size", "pnl"),
    ),
    "trades": Listing(
        "trades", "trade",
        "id,symbol,side,type,order_type,status,price,quantity,fee,fee_asset,realized_pnl,client_order_id,"
        "error_message,executed_at,position_id,signal_id,signals!inner(trader_id)",
        "executed_at", ("pending", "partially_filled", "filled", "cancelled", "failed"),
        ("id", "executed_at", "symbol", "side", "type", "order_type", "status", "price", "quantity", "fee",
         "fee_asset", "realized_pnl", "client_order_id", "position_id", "error_message"),
        "signals.trader_id",
        ("executed_at", "symbol", "side", "status", "price", "quantity", "fee", "realized_pnl"),
    ),
    "signals": Listing(
        "signals", "signal",
        "id,trader_id,symbol,status,trigger_price,current_price,timestamp,closed_at,close_reason",
        "timestamp", ("new", "watching", "position_open", "closed"),
        ("id", "timestamp", "trader_id", "symbol", "status", "trigger_price", "current_price", "closed_at",
         "close_reason"),
        "trader_id",
        ("timestamp", "trader_id", "symbol", "status", "trigger_price", "close_reason"),
    ),
    "analyses": Listing(
        "analysis_history", "analysis",
        "id,trader_id,signal_id,timestamp,decision,confidence,reasoning,metadata,model,prompt_tokens,"
        "completion_tokens",
        "timestamp", (),
        ("id", "timestamp", "trader_id", "signal_id", "decision", "confidence", "reasoning", "metadata",
         "model"),
        "trader_id",
        ("timestamp", "decision", "confidence", "reasoning"),
        status_column="decision",
    ),
}  # fmt: skip

TraderOption = Annotated[str | None, typer.Option("--trader", help="Only this trader (id, prefix or name).")]
SinceOption = Annotated[
    str | None, typer.Option("--since", help="Only newer than this: 30m, 12h, 7d, 2w or a date/time.")
]
LimitOption = Annotated[int, typer.Option("--limit", min=1, max=1000, help="Rows per page.")]
PageOption = Annotated[int, typer.Option("--page", min=1, help="Which page (newest first).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
CsvOption = Annotated[
    Path | None,
    typer.Option("--csv", help="Write CSV to this file ('-' for stdout); all pages unless --page."),
]
CSV_PAGE_ROWS = 1000


def _read(listing: Listing, trader: str | None, since: str | None, status: str | None, *,
          offset: int, limit: int | None) -> list[dict[str, Any]]:  # fmt: skip
    # !inner makes the trader filter drop other traders' rows; without a filter, keep rows of every kind.
    select = listing.select if trader else listing.select.replace("!inner", "")
    params = {"select": select, "order": f"{listing.time_column}.desc"}
    if status:
        allowed = listing.statuses
        if allowed and status not in allowed:
            raise UsageProblem(f"--status must be one of {', '.join(allowed)}, not {status!r}")
        params[listing.status_column] = f"eq.{status}"
    if since:
        params[listing.time_column] = f"gte.{parse_since(since)}"
    with api() as client:
        if trader:
            params[listing.trader_filter] = f"eq.{find_trader(client, trader, 'id')['id']}"
        what = f"reading your {listing.table.replace('_', ' ')}"
        if limit is not None:
            return client.rows(listing.table, params, what=what, offset=offset, limit=limit)
        rows: list[dict[str, Any]] = []
        while True:
            page = client.rows(listing.table, params, what=what, offset=len(rows), limit=CSV_PAGE_ROWS)
            rows += page
            if len(page) < CSV_PAGE_ROWS:
                return rows


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column in ("opened_at", "closed_at", "executed_at", "timestamp"):
        return short_time(str(value))
    if column.endswith("id"):
        return str(value)[:8]
    if column == "reasoning":
        text = str(value)
        return escape(text if len(text) <= 80 else text[:79] + "…")
    if column in ("pnl", "pnl_percent", "realized_pnl"):
        colour = "red" if str(value).startswith("-") else "green"
        return f"[{colour}]{value}[/]"
    return escape(str(value))


def _register(app: typer.Typer, name: str, listing: Listing, status_help: str) -> None:
    @app.command(name, help=f"Your {name}, newest first: filter, page, --json or --csv.")
    @command
    def show(  # noqa: PLR0917 - typer maps each option to a parameter
        trader: TraderOption = None,
        since: SinceOption = None,
        status: Annotated[str | None, typer.Option("--status", help=status_help)] = None,
        limit: LimitOption = 50,
        page: Annotated[int | None, typer.Option("--page", min=1, help="Which page (newest first).")] = None,
        as_json: JsonOption = False,
        csv_path: CsvOption = None,
    ) -> None:
        if csv_path is not None:  # every page unless one was asked for
            offset = (page - 1) * limit if page else 0
            rows = _read(listing, trader, since, status, offset=offset, limit=limit if page else None)
            write_csv(rows, listing.columns, csv_path)
            return
        page = page or 1
        rows = _read(listing, trader, since, status, offset=(page - 1) * limit, limit=limit)
        if as_json:
            emit_json(rows)
            return
        table = Table(*listing.table_columns)
        for row in rows:
            table.add_row(*(_cell(column, row.get(column)) for column in listing.table_columns))
        out.print(table)
        more = f"; --page {page + 1} for older" if len(rows) == limit else ""
        out.print(f"{len(rows)} {name} (page {page}){more}")


def register(app: typer.Typer) -> None:
    """Add the four record commands to the root app."""
    for name, listing in LISTINGS.items():
        status_help = (
            f"Only this status: {', '.join(listing.statuses)}."
            if listing.statuses
            else "Only this decision, e.g. open_long."
        )
        _register(app, name, listing, status_help)
