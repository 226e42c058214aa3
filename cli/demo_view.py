"""The demo's live terminal view, fed the way a frontend is: Realtime changes on signals and positions (the
user's JWT, through the gateway) trigger PostgREST reads; trades and analyses are read on a short timer too.

It runs until the replayed market reaches the demo's end, and fails with one line naming the part when the
worker's machine stops being healthy or the market stops moving.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from postgrest import AsyncPostgrestClient
from postgrest.types import CountMethod
from realtime import AsyncRealtimeClient, RealtimePostgresChangesListenEvent, RealtimeSubscribeStates
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from cli.demo_market import EXCHANGE_URL, format_market_ms

REFRESH_SECS = 1.0
HEALTH_EVERY_SECS = 5.0
UNHEALTHY_LIMIT = 3  # consecutive failed health checks (15 s) before the demo gives up
STALLED_AFTER_SECS = 15.0  # the market clock must move
ROWS_SHOWN = 8
WIDE_COLUMNS = 150  # side-by-side tables from this terminal width


class ViewFailure(Exception):
    """A part of the product stopped working while the demo ran; the message names it."""


@dataclass(frozen=True, slots=True)
class ViewTarget:
    api_url: str
    anon_key: str
    user_id: str
    user_jwt: str
    machine_id: str
    end_market_ms: int
    worker_pid: Callable[[], int | None]
    to_market_ms: Callable[[datetime], int]  # rows carry wall times; the view shows market times


@dataclass(slots=True)
class ViewState:
    market_ms: int = 0
    start_market_ms: int = 0
    speed: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    signals: list[dict[str, Any]] = field(default_factory=list)
    analyses: list[dict[str, Any]] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)
    positions: list[dict[str, Any]] = field(default_factory=list)
    prices: dict[str, float] = field(default_factory=dict)
    realtime_events: int = 0
    realtime_status: str = "connecting"
    health: str = "unknown"
    rss_mb: float | None = None
    peak_rss_mb: float | None = None


def memory_mb(pid: int) -> tuple[float, float] | None:
    """(current, peak) resident set of a process in MB, from /proc (VmRSS, VmHWM)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return None
    values = {
        line.split(":")[0]: int(line.split()[1]) / 1024
        for line in lines
        if line.startswith(("VmRSS", "VmHWM"))
    }
    if "VmRSS" not in values or "VmHWM" not in values:
        return None
    return values["VmRSS"], values["VmHWM"]


class LiveView:
    """Show the user's trading as it happens; `run()` returns when the market reaches the end."""

    def __init__(self, target: ViewTarget, console: Console) -> None:
        self.target = target
        self.state = ViewState()
        self._console = console
        self._changed = asyncio.Event()
        self._finished = asyncio.Event()

    # Entry point ------------------------------------------------------------------------------------------
    async def run(self) -> ViewState:
        from rich.live import Live

        headers = {"apikey": self.target.anon_key, "Authorization": f"Bearer {self.target.user_jwt}"}
        async with (
            httpx.AsyncClient(base_url=self.target.api_url, headers=headers, timeout=30.0) as api,
            httpx.AsyncClient(base_url=EXCHANGE_URL, timeout=10.0) as exchange,
            httpx.AsyncClient(timeout=10.0) as rest_http,
        ):
            rest = AsyncPostgrestClient(
                f"{self.target.api_url}/rest/v1", headers=headers, http_client=rest_http
            )
            with Live(self.render(), console=self._console, refresh_per_second=4, transient=False) as live:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._realtime(), name="demo-realtime")
                    tasks.create_task(self._watch_health(api), name="demo-health")
                    tasks.create_task(self._refresh(rest, exchange, live.update), name="demo-refresh")
        return self.state

    # Realtime ---------------------------------------------------------------------------------------------
    async def _realtime(self) -> None:
        client = AsyncRealtimeClient(f"{self.target.api_url}/realtime/v1", token=self.target.anon_key)
        try:
            await client.connect()
            await client.set_auth(self.target.user_jwt)
            channel = client.channel(f"demo:{self.target.user_id}")
            for table in ("signals", "positions"):
                channel.on_postgres_changes(
                    RealtimePostgresChangesListenEvent.All,
                    self._on_change,
                    table=table,
                    schema="public",
                    filter=f"user_id=eq.{self.target.user_id}",
                )

            def on_state(state: RealtimeSubscribeStates, error: Exception | None) -> None:
                self.state.realtime_status = state.value if error is None else f"{state.value}: {error}"

            await channel.subscribe(on_state)
            await self._finished.wait()
        finally:
            with contextlib.suppress(Exception):
                await client.close()

    def _on_change(self, payload: Any) -> None:
        self.state.realtime_events += 1
        self._changed.set()

    # Health ------------------------------------------------------------------------------------------------
    async def _watch_health(self, api: httpx.AsyncClient) -> None:
        failures = 0
        while not self._finished.is_set():
            reason = await self._check_health(api)
            self.state.health = "healthy" if reason is None else reason
            failures = 0 if reason is None else failures + 1
            if failures >= UNHEALTHY_LIMIT:
                raise ViewFailure(f"worker machine {self.target.machine_id}: {reason}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), HEALTH_EVERY_SECS)

    async def _check_health(self, api: httpx.AsyncClient) -> str | None:
        pid = await asyncio.to_thread(self.target.worker_pid)
        if pid is None:
            return "the worker process is not running (see .devstack/fly/machines/)"
        memory = memory_mb(pid)
        if memory is not None:
            self.state.rss_mb = memory[0]
            self.state.peak_rss_mb = max(memory[1], self.state.peak_rss_mb or 0.0)
        try:
            response = await api.post("/functions/v1/check-machine-health", json={})
        except httpx.TransportError as error:
            return f"check-machine-health unreachable ({type(error).__name__})"
        machines = response.json().get("machines", []) if response.status_code < 500 else []
        mine = [m for m in machines if m.get("machineId") == self.target.machine_id]
        if not mine:
            return f"check-machine-health ({response.status_code}) does not list the machine"
        if not mine[0].get("healthy"):
            return f"unhealthy: {mine[0].get('error') or mine[0].get('state')}"
        return None

    # Reads and rendering -----------------------------------------------------------------------------------
    async def _refresh(self, rest: AsyncPostgrestClient, exchange: httpx.AsyncClient, show: Any) -> None:
        moved_at, last_market_ms = time.monotonic(), -1
        try:
            while True:
                market = (await exchange.get("/_sim/state")).json()
                self.state.market_ms, self.state.speed = int(market["market_time_ms"]), float(market["speed"])
                if not self.state.start_market_ms:
                    self.state.start_market_ms = self.state.market_ms
                await self._read(rest, exchange)
                show(self.render())
                if self.state.market_ms >= self.target.end_market_ms:
                    return
                if self.state.market_ms != last_market_ms:
                    moved_at, last_market_ms = time.monotonic(), self.state.market_ms
                elif time.monotonic() - moved_at > STALLED_AFTER_SECS:
                    if self.state.market_ms >= int(market.get("end_ms") or 0):
                        return  # the recordings ended: the market stops there
                    raise ViewFailure("exchange simulator: the market clock stopped moving")
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), REFRESH_SECS)
        finally:
            self._finished.set()

    async def _read(self, rest: AsyncPostgrestClient, exchange: httpx.AsyncClient) -> None:
        def recent(table: str, select: str, order: str) -> Any:
            return (
                rest.from_(table)
                .select(select, count=CountMethod.exact)
                .order(order, desc=True)
                .limit(ROWS_SHOWN)
            )

        signals = await recent("signals", "id,symbol,status,trigger_price,created_at", "created_at").execute()
        analyses = await recent(
            "analysis_history", "decision,confidence,reasoning,timestamp,signals(symbol)", "timestamp"
        ).execute()
        trades = await recent(
            "trades", "symbol,side,quantity,price,status,executed_at", "executed_at"
        ).execute()
        positions = await (
            rest.from_("positions")
            .select(
                "symbol,side,entry_price,size,stop_loss,take_profit,status,metadata,realized_pnl,fees_paid"
            )
            .eq("status", "open")
            .execute()
        )
        closed = (
            await rest.from_("positions")
            .select("id", count=CountMethod.exact)
            .eq("status", "closed")
            .execute()
        )
        self.state.signals, self.state.analyses = _dicts(signals.data), _dicts(analyses.data)
        self.state.trades, self.state.positions = _dicts(trades.data), _dicts(positions.data)
        self.state.counts = {
            "signals": signals.count or 0,
            "decisions": analyses.count or 0,
            "trades": trades.count or 0,
            "closed": closed.count or 0,
        }
        for symbol in {p["symbol"] for p in self.state.positions}:
            response = await exchange.get("/api/v3/ticker/price", params={"symbol": symbol})
            if response.status_code == 200:
                self.state.prices[symbol] = float(response.json()["price"])

    def _clock(self, value: str | None) -> str:
        if not value:
            return "-"
        market_ms = self.target.to_market_ms(datetime.fromisoformat(value))
        return datetime.fromtimestamp(market_ms / 1000, UTC).strftime("%m-%d %H:%M")

    def render(self) -> Group:
        state = self.state
        span = max(self.target.end_market_ms - state.start_market_ms, 1)
        done = (
            min(max(state.market_ms - state.start_market_ms, 0) / span, 1.0) if state.start_market_ms else 0.0
        )
        rss = f"{state.rss_mb:.0f} MB (peak {state.peak_rss_mb:.0f})" if state.rss_mb else "-"
        header = (
            f"[bold]market[/] {format_market_ms(state.market_ms) if state.market_ms else '-'} "
            f"({state.speed:g}x, {done * 100:.0f}% of the run)   [bold]machine[/] {self.target.machine_id} "
            f"{state.health}, worker RSS {rss}   [bold]realtime[/] {state.realtime_status}, "
            f"{state.realtime_events} change(s)\n"
            f"signals {state.counts.get('signals', 0)}   AI decisions {state.counts.get('decisions', 0)}   "
            f"trades {state.counts.get('trades', 0)}   closed positions {state.counts.get('closed', 0)}"
        )
        signals = _table("signals", "created", "symbol", "status", "trigger price")
        for row in state.signals:
            signals.add_row(
                self._clock(row["created_at"]), row["symbol"], row["status"], _num(row["trigger_price"])
            )
        decisions = _table("AI decisions", "time", "symbol", "decision", "conf.", "reasoning")
        for row in state.analyses:
            symbol = (row.get("signals") or {}).get("symbol", "-")
            decisions.add_row(
                self._clock(row["timestamp"]), symbol, row["decision"], str(row.get("confidence") or "-"),
                (row.get("reasoning") or "")[:70],
            )  # fmt: skip
        trades = _table("trades", "time", "symbol", "side", "qty", "price", "status")
        for row in state.trades:
            trades.add_row(
                self._clock(row["executed_at"]), row["symbol"], row["side"], _num(row["quantity"]),
                _num(row["price"]), row["status"],
            )  # fmt: skip
        positions = _table(
            "open positions", "symbol", "side", "size", "entry", "stop", "target", "last", "PnL"
        )
        for row in state.positions:
            price = state.prices.get(row["symbol"])
            positions.add_row(
                row["symbol"], row["side"], _num(row["size"]), _num(row["entry_price"]),
                _num(row["stop_loss"]), _num(row["take_profit"]), _num(price), _pnl(row, price),
            )  # fmt: skip
        panel = Panel(header, title="TradeMind demo", border_style="cyan")
        if self._console.width < WIDE_COLUMNS:
            return Group(panel, signals, decisions, trades, positions)
        grid = Table.grid(expand=True)
        grid.add_column(ratio=1)
        grid.add_column(ratio=2)
        grid.add_row(signals, decisions)
        grid.add_row(trades, positions)
        return Group(panel, grid)


def _dicts(rows: list[Any]) -> list[dict[str, Any]]:
    return [row for row in rows if isinstance(row, dict)]


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", expand=True, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="ellipsis", no_wrap=True)
    return table


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{Decimal(str(value)):.6g}"


def _pnl(row: dict[str, Any], price: float | None) -> str:
    cost = (row.get("metadata") or {}).get("cost_basis")
    if price is None or cost is None:
        return "-"
    sign = 1 if row["side"] == "long" else -1
    gross = (Decimal(str(row["size"])) * Decimal(str(price)) - Decimal(str(cost))) * sign
    net = gross + Decimal(str(row["realized_pnl"])) - Decimal(str(row["fees_paid"]))
    colour = "green" if net >= 0 else "red"
    return f"[{colour}]{net:+.2f}[/]"
