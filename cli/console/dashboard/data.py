"""What each dashboard pane shows, read as the signed-in user: one PostgREST query per pane, and the market's
last prices from the exchange's public 24 h ticker (Binance, or the local exchange simulator).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from cli.console.api import Api
from cli.console.session import LOCAL_URL

ROWS = 50
LOG_LINES = 200
LOCAL_MARKET_URL = "http://127.0.0.1:54340"
BINANCE_URL = "https://api.binance.com"

# Pane -> (table, query). Each is re-read when Realtime reports a change to its table.
QUERIES: dict[str, tuple[str, dict[str, str]]] = {
    "traders": ("traders", {
        "select": "id,name,status,error_message,trading_mode,symbols,check_interval,risk,signals(timestamp)",
        "order": "created_at", "signals.order": "timestamp.desc", "signals.limit": "1",
    }),
    "positions": ("positions", {
        "select": "id,symbol,side,type,entry_price,size,stop_loss,take_profit,opened_at,signals(trader_id)",
        "status": "eq.open", "order": "opened_at.desc",
    }),
    "signals": ("signals", {
        "select": "id,trader_id,symbol,status,trigger_price,timestamp,close_reason",
        "order": "timestamp.desc", "limit": str(ROWS),
    }),
    "analyses": ("analysis_history", {
        "select": "id,trader_id,signal_id,timestamp,decision,confidence,reasoning,signals(symbol)",
        "order": "timestamp.desc", "limit": str(ROWS),
    }),
    "trades": ("trades", {
        "select": "id,symbol,side,type,status,price,quantity,fee,realized_pnl,executed_at",
        "order": "executed_at.desc", "limit": str(ROWS),
    }),
    "machine": ("fly_machines", {
        "select": "machine_id,status,version,region,memory_mb,last_heartbeat,error_message",
        "status": "neq.destroyed",
    }),
    "logs": ("machine_logs", {
        "select": "id,logged_at,level,logger,message", "order": "logged_at.desc", "limit": str(LOG_LINES),
    }),
    "cost": ("user_costs_month_to_date", {"select": "total_cost_usd,machine_cost_usd,ai_cost_usd"}),
}  # fmt: skip
PANES_BY_TABLE = {table: pane for pane, (table, _) in QUERIES.items()}


def read_pane(client: Api, pane: str) -> list[dict[str, Any]]:
    table, params = QUERIES[pane]
    rows = client.rows(table, params, what=f"reading {pane}")
    return list(reversed(rows)) if pane == "logs" else rows


def market_url(api_url: str) -> str:
    """Where prices come from: TRADEMIND_MARKET_URL, else the simulator for the local stack, else Binance."""
    configured = os.environ.get("TRADEMIND_MARKET_URL")
    if configured:
        return configured.rstrip("/")
    return LOCAL_MARKET_URL if api_url == LOCAL_URL else BINANCE_URL


@dataclass(frozen=True, slots=True)
class Quote:
    symbol: str
    last_price: Decimal
    change_percent: Decimal


def read_quotes(http: httpx.Client, base_url: str, symbols: list[str]) -> dict[str, Quote]:
    """Binance's public GET /api/v3/ticker/24hr for the symbols (no key needed); {} for no symbols."""
    if not symbols:
        return {}
    response = http.get(
        f"{base_url}/api/v3/ticker/24hr",
        params={"symbols": json.dumps(sorted(symbols), separators=(",", ":"))},
    )
    response.raise_for_status()
    return {
        row["symbol"]: Quote(row["symbol"], Decimal(row["lastPrice"]), Decimal(row["priceChangePercent"]))
        for row in response.json()
    }


def unrealised_pnl(position: dict[str, Any], last_price: Decimal | None) -> Decimal | None:
    """USD gained (or lost) if the position closed at `last_price`, before fees."""
    if last_price is None:
        return None
    direction = 1 if position["side"] == "long" else -1
    return (last_price - Decimal(str(position["entry_price"]))) * Decimal(str(position["size"])) * direction


@dataclass(slots=True)
class DashboardState:
    """The latest rows of every pane, and the prices."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    quotes: dict[str, Quote] = field(default_factory=dict)

    def symbols(self) -> list[str]:
        wanted = {symbol for trader in self.rows.get("traders", []) for symbol in trader.get("symbols") or []}
        wanted |= {position["symbol"] for position in self.rows.get("positions", [])}
        return sorted(wanted)

    def trader_names(self) -> dict[str, str]:
        return {str(row["id"]): row["name"] for row in self.rows.get("traders", [])}
