"""The dashboard driven by Textual's pilot against the local stack: panes fill from PostgREST and follow
Realtime, keyboard actions reach the database, and everything fits 80x24."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, RichLog, Static, TabbedContent

from cli.console.api import Api
from cli.console.dashboard.app import Dashboard
from cli.console.session import Profile
from devstack.fly.client import FlyStandInClient
from tests.cli.console.conftest import Trader, invoke, machine_health
from tests.factories import create_trader

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def dashboard(trader: Trader) -> Iterator[Callable[[], Dashboard]]:
    """Make the signed-in trader's dashboard (its API client closed after the test)."""
    clients: list[Api] = []

    def make() -> Dashboard:
        clients.append(Api(Profile("default", trader.config_dir)))
        return Dashboard(clients[-1])

    yield make
    for client in clients:
        client.close()
    # realtime-py's websocket can still be collected unclosed after Textual cancels the app's workers at exit;
    # collect it now that the test has let go of the app, inside this module's warning filter, rather than in
    # whichever test runs next.
    gc.collect()


@contextlib.asynccontextmanager
async def running(app: Dashboard) -> AsyncIterator[Pilot[None]]:
    """The app at 80x24 with its Realtime subscription up; afterwards its sockets are closed for good."""
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: app.realtime_status == "subscribed", 10)
        yield pilot
    await app.close_realtime()
    await asyncio.sleep(0.1)  # let the transports' close callbacks run


async def until(check: Callable[[], bool], timeout_secs: float) -> float:
    """Seconds until `check()` held; fails after `timeout_secs`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_secs:
            raise AssertionError(f"not within {timeout_secs} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def cells(app: Dashboard, table_id: str) -> list[list[str]]:
    table = app.query_one(f"#{table_id}", DataTable)
    return [[str(cell) for cell in table.get_row_at(index)] for index in range(table.row_count)]


def open_position(db: psycopg.Connection[Any], user_id: uuid.UUID, trader_id: uuid.UUID) -> uuid.UUID:
    signal = db.execute(
        "insert into signals (trader_id, user_id, symbol, status, trigger_price) values (%s, %s, 'BTCUSDT',"
        " 'position_open', 42000) returning id",
        (trader_id, user_id),
    ).fetchone()
    assert signal is not None
    position = db.execute(
        "insert into positions (signal_id, user_id, symbol, side, entry_price, size, stop_loss, take_profit)"
        " values (%s, %s, 'BTCUSDT', 'long', 42000, 0.01, 41000, 44000) returning id",
        (signal[0], user_id),
    ).fetchone()
    assert position is not None
    return uuid.UUID(str(position[0]))


async def test_panes_fill_and_follow_realtime_within_a_second(
    db: psycopg.Connection[Any], trader: Trader, dashboard: Callable[[], Dashboard]
) -> None:
    trader_id = create_trader(db, trader.user, "Dip buyer")
    open_position(db, trader.user.id, trader_id)
    app = dashboard()

    async with running(app) as pilot:
        await until(lambda: len(cells(app, "positions")) == 1 and len(cells(app, "traders")) == 1, 5)
        assert cells(app, "traders")[0][:3] == ["Dip buyer", "active", "paper"]
        # Everything fits 80x24 without scrolling: the status line on top, the footer at the bottom.
        status = app.query_one("#status", Static)
        assert status.region.y == 0 and "realtime subscribed" in str(status.render())
        assert app.query_one(TabbedContent).region.bottom == 23 and app.screen.max_scroll_y == 0
        assert cells(app, "positions")[0][:4] == ["BTCUSDT", "long", "42000", "0.01"]
        await until(lambda: cells(app, "markets") and cells(app, "markets")[0][1] != "-", 10)
        await until(lambda: cells(app, "positions")[0][5] != "-", 5)  # unrealised PnL from the live price

        # A new signal, a trade, an analysis and a log line appear within a second of their commit.
        signal = db.execute(
            "insert into signals (trader_id, user_id, symbol, trigger_price) values (%s, %s, 'ETHUSDT', 3300)"
            " returning id",
            (trader_id, trader.user.id),
        ).fetchone()
        assert signal is not None
        signal_delay = await until(lambda: any(row[2] == "ETHUSDT" for row in cells(app, "signals")), 1.0)
        db.execute(
            "insert into analysis_history (signal_id, trader_id, user_id, decision, reasoning, confidence)"
            " values (%s, %s, %s, 'watch', 'Waiting for the 4h close above resistance.', 55)",
            (signal[0], trader_id, trader.user.id),
        )
        analysis_delay = await until(lambda: any(row[2] == "watch" for row in cells(app, "analyses")), 1.0)
        db.execute("update traders set status = 'paused' where id = %s", (trader_id,))
        trader_delay = await until(lambda: cells(app, "traders")[0][1] == "paused", 1.0)
        await pilot.press("2")
        await pilot.pause()
        assert "Waiting for the 4h close" in str(app.query_one("#reasoning", Static).render())
        # Resizing keeps every pane and its rows.
        await pilot.resize_terminal(132, 43)
        await pilot.press("1")
        await pilot.pause()
        assert app.size == (132, 43) and len(cells(app, "positions")) == 1 and len(cells(app, "traders")) == 1

    assert max(signal_delay, analysis_delay, trader_delay) < 1.0


async def test_pause_from_the_dashboard_reaches_the_database(
    db: psycopg.Connection[Any], trader: Trader, dashboard: Callable[[], Dashboard]
) -> None:
    trader_id = create_trader(db, trader.user, "Dip buyer")
    app = dashboard()

    async with running(app) as pilot:
        await until(lambda: len(cells(app, "traders")) == 1, 5)
        await pilot.click("#traders")
        await pilot.press("p")
        await until(lambda: cells(app, "traders")[0][1] == "paused", 3)
        status = db.execute("select status from traders where id = %s", (trader_id,)).fetchone()
        await pilot.press("p")
        await until(lambda: cells(app, "traders")[0][1] == "active", 3)

    assert status == ("paused",)


async def test_pause_from_the_dashboard_reaches_the_worker(
    db: psycopg.Connection[Any],
    subscriber: Trader,
    fly: FlyStandInClient,
    dashboard: Callable[[], Dashboard],
) -> None:
    trader_id = create_trader(db, subscriber.user, "Dip buyer")
    assert invoke("machine", "provision").exit_code == 0
    row = db.execute("select machine_id from fly_machines where user_id = %s", (subscriber.user.id,))
    machine_id = str(row.fetchone()[0])  # type: ignore[index]
    await asyncio.to_thread(machine_health, fly, machine_id, lambda body: body["activeTraders"] == 1)
    worker_log = Path(fly.process(machine_id)["logPath"])
    app = dashboard()

    async with running(app) as pilot:
        await until(lambda: len(cells(app, "traders")) == 1, 5)
        await pilot.click("#traders")
        await pilot.press("p")
        # The worker's trader sync (Realtime) takes the paused trader off its schedule and says so.
        paused_line = f"trader paused trader_id={trader_id}"
        reached_worker_secs = await until(lambda: paused_line in worker_log.read_text(), 10)
        # The worker ships that line to machine_logs; the logs pane shows it (Realtime).
        await pilot.press("3")
        log = app.query_one("#log", RichLog)
        await until(lambda: any(paused_line in row["message"] for row in app.state.rows.get("logs", [])), 10)
        shown = "".join(str(line.text) for line in log.lines)  # wrapped at 80 columns
        assert "".join(paused_line.split()) in "".join(shown.split())

    assert reached_worker_secs < 10


async def test_chat_asks_about_the_highlighted_position(
    db: psycopg.Connection[Any], trader: Trader, dashboard: Callable[[], Dashboard]
) -> None:
    trader_id = create_trader(db, trader.user, "Dip buyer")
    open_position(db, trader.user.id, trader_id)
    app = dashboard()

    async with running(app) as pilot:
        await until(lambda: len(cells(app, "positions")) == 1, 5)
        await pilot.press("4")
        await pilot.click("#question")
        await pilot.press(*"Where is my stop?", "enter")
        log = app.query_one("#chat-log", RichLog)
        await until(lambda: any("AI:" in str(line.text) for line in log.lines), 10)
        text = " ".join(str(line.text) for line in log.lines)

    assert "stop-loss 41000 and take-profit 44000" in " ".join(text.split())
