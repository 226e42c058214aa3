"""The live dashboard (`trademind` / `trademind monitor`): a Textual app fed by Realtime and PostgREST.

Every pane is one PostgREST query as the signed-in user (data.py). Realtime (realtime-py, the user's JWT)
reports each change to the user's rows; the changed table's pane is read again within a quarter second.
Prices come from the exchange's public ticker every few seconds, and unrealised PnL is computed from them.
HTTP calls run in Textual's thread workers, so the screen never waits on the network. Keyboard first:
1-5 switch tabs, t/o focus the traders/positions, p pauses or resumes the highlighted trader, Enter in the
chat asks the AI about the highlighted position (else trader), q quits.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

import httpx
from realtime import AsyncRealtimeClient, RealtimePostgresChangesListenEvent, RealtimeSubscribeStates
from realtime.types import PostgresChangesPayload
from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Input, Label, RichLog, Static, TabbedContent, TabPane

from cli.console.api import Api
from cli.console.chat import ask_ai
from cli.console.common import profile
from cli.console.dashboard.data import (
    PANES_BY_TABLE,
    QUERIES,
    DashboardState,
    market_url,
    read_pane,
    read_quotes,
    unrealised_pnl,
)
from cli.console.errors import ConsoleError
from cli.console.machine import destroy_machine, machine_status, provision_machine, restart_machine
from cli.console.traders import set_status

FLUSH_SECS = 0.25
QUOTES_SECS = 3.0
HEALTH_SECS = 15.0
TOKEN_CHECK_SECS = 30.0
CLOSE_SECS = 2.0
CHAT_TURNS = 10
LEVEL_COLOURS = {"DEBUG": "dim", "INFO": "white", "WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}
STATUS_COLOURS = {"active": "green", "paused": "yellow", "error": "red", "open": "green", "closed": "dim"}


def _time(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%m-%d %H:%M:%S")


def _coloured(value: str) -> Text:
    return Text(value, style=STATUS_COLOURS.get(value, ""))


def _money(value: Decimal | None) -> Text:
    if value is None:
        return Text("-")
    return Text(f"{value:+.2f}", style="green" if value >= 0 else "red")


class Confirm(ModalScreen[bool]):
    """Yes or no, keyboard first (y / n / escape)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Label(self.question)
            with Horizontal():
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no", variant="primary")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class Dashboard(App[None]):
    """Markets, traders, positions, signals, AI decisions, trades, logs, chat and the machine, live."""

    TITLE = "TradeMind"
    CSS = """
    Screen { overflow: hidden; }
    #status { height: 1; background: $boost; padding: 0 1; }
    TabbedContent, ContentSwitcher, TabPane { height: 1fr; }
    DataTable { height: 1fr; }
    .half { height: 1fr; }
    #reasoning { height: auto; max-height: 6; padding: 0 1; color: $text-muted; }
    #chat-log { height: 1fr; }
    #machine-info { height: auto; padding: 1; }
    #machine-buttons { height: 3; }
    #confirm { width: 60; height: auto; padding: 1 2; border: thick $error; background: $surface; }
    #confirm Horizontal { height: 3; margin-top: 1; }
    Confirm { align: center middle; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "tab('overview')", "Overview"),
        Binding("2", "tab('activity')", "Activity"),
        Binding("3", "tab('logs')", "Logs"),
        Binding("4", "tab('chat')", "Chat"),
        Binding("5", "tab('machine')", "Machine"),
        Binding("t", "focus_table('traders')", "Traders"),
        Binding("o", "focus_table('positions')", "Positions"),
        Binding("p", "toggle_pause", "Pause/resume"),
        Binding("r", "reload", "Reload"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, client: Api) -> None:
        super().__init__()
        self.client = client
        self.state = DashboardState()
        self.realtime_status = "connecting"
        self.health: dict[str, Any] | None = None
        self.conversation: list[dict[str, str]] = []
        self.message = ""
        self._dirty: set[str] = set(QUERIES)
        self._market_url = market_url(client.endpoint.url)
        self._realtime: AsyncRealtimeClient | None = None

    # Layout -------------------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with TabbedContent(initial="overview"):
            with TabPane("Overview", id="overview"):
                yield DataTable(id="markets", classes="half", cursor_type="row")
                yield DataTable(id="traders", classes="half", cursor_type="row")
                yield DataTable(id="positions", classes="half", cursor_type="row")
            with TabPane("Activity", id="activity"):
                yield DataTable(id="signals", classes="half", cursor_type="row")
                yield DataTable(id="analyses", classes="half", cursor_type="row")
                yield Static(id="reasoning")
                yield DataTable(id="trades", classes="half", cursor_type="row")
            with TabPane("Logs", id="logs"):
                yield RichLog(id="log", wrap=True, markup=True, max_lines=2000)
            with TabPane("Chat", id="chat"):
                yield RichLog(id="chat-log", wrap=True, markup=True)
                yield Input(
                    placeholder="Ask about the highlighted position or trader, then Enter", id="question"
                )
            with TabPane("Machine", id="machine"), VerticalScroll():
                yield Static(id="machine-info")
                with Horizontal(id="machine-buttons"):
                    yield Button("Provision", id="provision")
                    yield Button("Restart", id="restart", variant="warning")
                    yield Button("Destroy", id="destroy", variant="error")
        yield Footer()

    def on_mount(self) -> None:
        columns = {
            "markets": ("symbol", "last", "24h %"),
            "traders": ("name", "status", "mode", "interval", "last signal"),
            "positions": ("symbol", "side", "entry", "size", "last", "uPnL", "stop", "target"),
            "signals": ("time", "trader", "symbol", "status", "price"),
            "analyses": ("time", "symbol", "decision", "conf", "reasoning"),
            "trades": ("time", "symbol", "side", "status", "price", "qty"),
        }
        for table_id, names in columns.items():
            table = self.query_one(f"#{table_id}", DataTable)
            table.add_columns(*names)
            table.border_title = table_id
        self.query_one("#markets", DataTable).border_title = "markets"
        self.render_status()
        self.set_interval(FLUSH_SECS, self.flush)
        self.set_interval(QUOTES_SECS, self.load_quotes)
        self.set_interval(HEALTH_SECS, self.load_health)
        self.load_health()
        self.run_worker(self.follow_realtime(), name="realtime", group="realtime", exit_on_error=False)

    # Loading ------------------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Re-read every pane whose table changed since the last flush."""
        dirty, self._dirty = self._dirty, set()
        for pane in dirty:
            self.load_pane(pane)

    @work(thread=True, group="load", exit_on_error=False)
    def load_pane(self, pane: str) -> None:
        try:
            rows = read_pane(self.client, pane)
        except ConsoleError as error:
            self.call_from_thread(self.show_message, str(error))
            return
        self.call_from_thread(self.apply_rows, pane, rows)

    @work(thread=True, exclusive=True, group="quotes", exit_on_error=False)
    def load_quotes(self) -> None:
        symbols = self.state.symbols()
        try:
            with httpx.Client(timeout=5.0) as http:
                quotes = read_quotes(http, self._market_url, symbols)
        except (httpx.HTTPError, ValueError, KeyError) as error:
            self.call_from_thread(self.show_message, f"prices unavailable from {self._market_url}: {error}")
            return
        self.call_from_thread(self.apply_quotes, quotes)

    @work(thread=True, exclusive=True, group="health", exit_on_error=False)
    def load_health(self) -> None:
        try:
            report = machine_status(self.client)
        except ConsoleError as error:
            self.call_from_thread(self.show_message, str(error))
            return
        self.call_from_thread(self.apply_health, report.get("health"))

    async def follow_realtime(self) -> None:
        """Subscribe to every table a pane shows (filtered to the user); a change marks its pane dirty."""
        token = self.client.access_token()
        realtime = AsyncRealtimeClient(
            f"{self.client.endpoint.url}/realtime/v1", token=self.client.endpoint.anon_key
        )
        try:
            await realtime.connect()
            await realtime.set_auth(token)
            channel = realtime.channel(f"console:{self.client.user_id}")
            for table in PANES_BY_TABLE:
                if table == "user_costs_month_to_date":
                    continue
                channel.on_postgres_changes(
                    RealtimePostgresChangesListenEvent.All,
                    self.on_change,
                    table=table,
                    schema="public",
                    filter=f"user_id=eq.{self.client.user_id}",
                )

            def on_state(state: RealtimeSubscribeStates, error: Exception | None) -> None:
                self.realtime_status = state.value.lower() if error is None else f"{state.value}: {error}"
                self.render_status()
                if state is RealtimeSubscribeStates.SUBSCRIBED:
                    self._dirty |= set(QUERIES)  # catch up on what changed while (re)subscribing

            await channel.subscribe(on_state)
            while True:  # keep Realtime on a fresh token for as long as the dashboard runs
                await asyncio.sleep(TOKEN_CHECK_SECS)
                fresh = await asyncio.to_thread(self.client.access_token)
                if fresh != token:
                    token = fresh
                    await realtime.set_auth(token)
        finally:
            await self.close_realtime()

    async def close_realtime(self) -> None:
        """Close the Realtime socket once, whether the app quits or the worker ends."""
        realtime, self._realtime = self._realtime, None
        if realtime is None:
            return
        # realtime-py's close() waits for the server's close frame; when that does not come in time (or the
        # app is cancelled meanwhile), drop the TCP connection so no socket outlives the app. realtime-py
        # exposes no public handle on its connection.
        connection = realtime._ws_connection
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(realtime.close(), CLOSE_SECS)
        finally:  # also when the app cancels this worker mid-close
            if connection is not None:
                connection.transport.abort()

    def on_change(self, payload: PostgresChangesPayload) -> None:
        table = payload["data"]["table"]
        pane = PANES_BY_TABLE.get(str(table))
        if pane:
            self._dirty.add(pane)
        if pane in ("traders", "positions"):
            self._dirty.add("cost")

    # Rendering ----------------------------------------------------------------------------------------------
    def apply_rows(self, pane: str, rows: list[dict[str, Any]]) -> None:
        self.state.rows[pane] = rows
        render = getattr(self, f"render_{pane}")
        render(rows)
        if pane in ("traders", "positions"):
            self.render_markets()
        self.render_status()

    def apply_quotes(self, quotes: dict[str, Any]) -> None:
        self.state.quotes = quotes
        self.render_markets()
        self.render_positions(self.state.rows.get("positions", []))

    def apply_health(self, health: dict[str, Any] | None) -> None:
        self.health = health
        self.render_machine(self.state.rows.get("machine", []))

    def show_message(self, message: str) -> None:
        self.message = message
        self.render_status()

    def render_status(self) -> None:
        machine = next(iter(self.state.rows.get("machine", [])), None)
        cost = next(iter(self.state.rows.get("cost", [])), None)
        parts = [
            escape(self.client.session.email or self.client.user_id),
            f"machine {machine['status']}" if machine else "no machine",
            f"realtime {self.realtime_status}",
        ]
        if cost:
            parts.append(f"month ${Decimal(str(cost['total_cost_usd'])):.2f}")
        if self.message:
            parts.append(f"[yellow]{escape(self.message)}[/]")
        self.query_one("#status", Static).update(" | ".join(parts))

    def _fill(self, table_id: str, rows: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Replace a table's rows, keeping the cursor on the same row key when it is still there."""
        table = self.query_one(f"#{table_id}", DataTable)
        selected = self.selected_key(table_id)
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if selected is not None and selected in {key for key, _ in rows}:
            table.move_cursor(row=table.get_row_index(selected))

    def selected_key(self, table_id: str) -> str | None:
        table = self.query_one(f"#{table_id}", DataTable)
        if not table.row_count:
            return None
        with contextlib.suppress(Exception):
            return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        return None

    def render_markets(self) -> None:
        rows = []
        for symbol in self.state.symbols():
            quote = self.state.quotes.get(symbol)
            change = (
                Text(f"{quote.change_percent:+.2f}", style="green" if quote.change_percent >= 0 else "red")
                if quote
                else "-"
            )
            rows.append((symbol, (symbol, str(quote.last_price) if quote else "-", change)))
        self._fill("markets", rows)

    def render_traders(self, traders: list[dict[str, Any]]) -> None:
        rows = []
        for trader in traders:
            last = trader["signals"][0]["timestamp"] if trader.get("signals") else None
            cells = (escape(trader["name"]), _coloured(trader["status"]), trader["trading_mode"],
                     trader["check_interval"], _time(last))  # fmt: skip
            rows.append((str(trader["id"]), cells))
        self._fill("traders", rows)

    def render_positions(self, positions: list[dict[str, Any]]) -> None:
        rows = []
        for position in positions:
            quote = self.state.quotes.get(position["symbol"])
            last = quote.last_price if quote else None
            cells = (
                position["symbol"], position["side"], str(position["entry_price"]), str(position["size"]),
                str(last) if last is not None else "-", _money(unrealised_pnl(position, last)),
                str(position["stop_loss"] or "-"), str(position["take_profit"] or "-"),
            )  # fmt: skip
            rows.append((str(position["id"]), cells))
        self._fill("positions", rows)

    def render_signals(self, signals: list[dict[str, Any]]) -> None:
        names = self.state.trader_names()
        rows = []
        for row in signals:
            name = escape(names.get(str(row["trader_id"]), "?"))
            cells = (_time(row["timestamp"]), name, row["symbol"], row["status"], str(row["trigger_price"]))
            rows.append((str(row["id"]), cells))
        self._fill("signals", rows)

    def render_analyses(self, analyses: list[dict[str, Any]]) -> None:
        rows = []
        for row in analyses:
            symbol = (row.get("signals") or {}).get("symbol", "?")
            cells = (_time(row["timestamp"]), symbol, row["decision"], str(row["confidence"] or "-"),
                     escape(row["reasoning"][:60]))  # fmt: skip
            rows.append((str(row["id"]), cells))
        self._fill("analyses", rows)
        self.show_reasoning()

    def render_trades(self, trades: list[dict[str, Any]]) -> None:
        self._fill("trades", [
            (str(row["id"]), (_time(row["executed_at"]), row["symbol"], row["side"], row["status"],
                              str(row["price"] or "-"), str(row["quantity"])))
            for row in trades
        ])  # fmt: skip

    def render_logs(self, lines: list[dict[str, Any]]) -> None:
        log = self.query_one("#log", RichLog)
        log.clear()
        for line in lines:
            colour = LEVEL_COLOURS.get(line["level"], "white")
            log.write(
                f"[dim]{_time(line['logged_at'])}[/] [{colour}]{line['level']:<7}[/] "
                f"[dim]{escape(line['logger'])}[/] {escape(line['message'])}"
            )

    def render_machine(self, rows: list[dict[str, Any]]) -> None:
        machine = next(iter(rows), None)
        info = self.query_one("#machine-info", Static)
        if machine is None:
            info.update("No machine. Provision one to run your traders.")
        else:
            health = self.health or {}
            verdict = (
                "[green]healthy[/]"
                if health.get("healthy")
                else f"[red]not healthy[/] {health.get('error') or ''}"
            )
            info.update(
                f"machine {machine['machine_id']}  status {machine['status']}  "
                f"version {machine['version'] or '-'}\n"
                f"region {machine['region'] or '-'}  memory {machine['memory_mb'] or '-'} MB  "
                f"heartbeat {_time(machine['last_heartbeat'])}\n"
                f"health: {verdict}  traders {health.get('activeTraders', '-')}  "
                f"open positions {health.get('openPositions', '-')}"
            )
        self.render_status()

    def render_cost(self, _: list[dict[str, Any]]) -> None:
        self.render_status()

    @on(DataTable.RowHighlighted, "#analyses")
    def show_reasoning(self) -> None:
        key = self.selected_key("analyses")
        row = next((row for row in self.state.rows.get("analyses", []) if str(row["id"]) == key), None)
        self.query_one("#reasoning", Static).update(escape(row["reasoning"]) if row else "")

    # Actions ------------------------------------------------------------------------------------------------
    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_focus_table(self, table_id: str) -> None:
        self.query_one(TabbedContent).active = "overview"
        self.query_one(f"#{table_id}", DataTable).focus()

    def action_reload(self) -> None:
        self._dirty |= set(QUERIES)
        self.load_quotes()
        self.load_health()

    def action_toggle_pause(self) -> None:
        key = self.selected_key("traders")
        trader = next((row for row in self.state.rows.get("traders", []) if str(row["id"]) == key), None)
        if trader is None:
            self.show_message("highlight a trader on the Overview tab first")
            return
        self.toggle_pause(trader)

    @work(thread=True, group="actions", exit_on_error=False)
    def toggle_pause(self, trader: dict[str, Any]) -> None:
        status = "active" if trader["status"] != "active" else "paused"
        try:
            set_status(self.client, trader, status)
        except ConsoleError as error:
            self.call_from_thread(self.show_message, str(error))
            return
        self.call_from_thread(
            self.show_message, f"{trader['name']} {'resumed' if status == 'active' else 'paused'}"
        )

    @on(Input.Submitted, "#question")
    def submit_question(self, event: Input.Submitted) -> None:
        question = event.value.strip()
        if not question:
            return
        position = self.selected_key("positions")
        trader = self.selected_key("traders")
        if position is None and trader is None:
            self.query_one("#chat-log", RichLog).write(
                "[yellow]highlight a position or trader on Overview first[/]"
            )
            return
        event.input.value = ""
        self.query_one("#chat-log", RichLog).write(f"[bold]you:[/] {escape(question)}")
        self.ask(question, position, None if position else trader)

    @work(thread=True, group="chat", exit_on_error=False)
    def ask(self, question: str, position_id: str | None, trader_id: str | None) -> None:
        try:
            answer = ask_ai(self.client, question, trader_id=trader_id, position_id=position_id,
                            conversation=self.conversation[-CHAT_TURNS:])  # fmt: skip
        except ConsoleError as error:
            self.call_from_thread(self.query_one("#chat-log", RichLog).write, f"[red]{escape(str(error))}[/]")
            return
        self.conversation += [{"role": "user", "text": question}, {"role": "model", "text": answer["answer"]}]
        self.call_from_thread(
            self.query_one("#chat-log", RichLog).write, f"[bold]AI:[/] {escape(answer['answer'])}"
        )

    @on(Button.Pressed, "#machine-buttons Button")
    def machine_button(self, event: Button.Pressed) -> None:
        action = str(event.button.id)
        questions = {
            "provision": "Provision your machine? It starts running your traders.",
            "restart": "Restart your machine? Trading pauses for a few seconds.",
            "destroy": "Destroy your machine? Every trader stops and open positions are no longer guarded.",
        }

        def answered(yes: bool | None) -> None:
            if yes:
                self.show_message(f"{action}: working...")
                self.machine_action(action)

        self.push_screen(Confirm(questions[action]), answered)

    @work(thread=True, exclusive=True, group="machine", exit_on_error=False)
    def machine_action(self, action: str) -> None:
        calls = {"provision": provision_machine, "restart": restart_machine, "destroy": destroy_machine}
        try:
            calls[action](self.client)
        except ConsoleError as error:
            self.call_from_thread(self.show_message, str(error))
            return
        self.call_from_thread(self.show_message, f"{action}: done")
        self.load_health()


def run_dashboard() -> None:
    """Open the dashboard for the chosen profile's signed-in user."""
    with Api(profile()) as client:
        client.access_token()  # an expired session is one line now, not an error inside the app
        Dashboard(client).run()
