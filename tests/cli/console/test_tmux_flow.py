"""A whole trader's flow typed into a real terminal (tmux, 80x24), as the README tells it: sign up, create two
strategies in plain words, watch them trade in the dashboard, pause one there, ask the AI about an open
position, export the paused trader's trades. The test only types keys and reads the screen (the database is
read to know what to wait for and what the screen must show), except where the platform itself acts: billing
(tier and subscription) is set in SQL, as its webhook would.
"""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack.fly.client import FlyStandInClient
from devstack.stack import DevStack

PASSWORD = "correct horse battery 9"
STRATEGIES = {  # name -> description, in the order they are created (the dashboard lists traders so)
    "Trend": "Trade BTC and ETH on the 1 minute chart when the trend is up",
    "Ride": "Trade ETH on the 1 minute chart when the trend is up",
}
TRADE_TIMEOUT_SECS = 240


class Terminal:
    """One tmux session on its own server socket: type keys, read the screen."""

    def __init__(self, socket: str, environment: dict[str, str]) -> None:
        self.socket = socket
        exports = " ".join(f"{name}={value}" for name, value in environment.items())
        self._tmux("new-session", "-d", "-s", "flow", "-x", "80", "-y", "24", f"env {exports} bash --norc -i")

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True)
        return done.stdout

    def type(self, text: str, *, enter: bool = True) -> None:
        self._tmux("send-keys", "-t", "flow", "-l", text)
        if enter:
            self._tmux("send-keys", "-t", "flow", "Enter")

    def run(self, command: str) -> None:
        """Type a command on a cleared screen, so what is waited for next can only be its output."""
        self.type("clear")
        self.wait_for(lambda screen: screen.strip() == "$", 10)
        self.type(command)

    def key(self, name: str) -> None:
        self._tmux("send-keys", "-t", "flow", name)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "flow")

    def wait_for(self, check: Callable[[str], bool] | str, timeout_secs: float = 30) -> str:
        test = (lambda screen: check in screen) if isinstance(check, str) else check
        deadline = time.monotonic() + timeout_secs
        while time.monotonic() < deadline:
            screen = self.screen()
            if test(screen):
                return screen
            if "error:" in screen and not test(screen):  # a command failed: say so now, not at the timeout
                raise AssertionError(f"a command failed while waiting for {check!r}:\n{screen}")
            time.sleep(0.2)
        raise AssertionError(f"not on screen within {timeout_secs} s: {check!r}\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def terminal(stack: DevStack, tmp_path: Path) -> Iterator[Terminal]:
    bin_dir = Path(sys.executable).parent
    environment = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "TRADEMIND_CONFIG_DIR": str(tmp_path / "config"),
        "TERM": "xterm-256color",
        "PS1": "'$ '",
    }
    session = Terminal(f"trademind-flow-{uuid.uuid4().hex[:8]}", environment)
    yield session
    session.close()


def test_signup_two_strategies_watch_them_trade_pause_ask_and_export(
    db: psycopg.Connection[Any], terminal: Terminal, stack: DevStack, tmp_path: Path
) -> None:
    email = f"flow-{uuid.uuid4().hex[:8]}@example.com"
    try:
        # Sign up, typing the password twice into the hidden prompts.
        terminal.type(f"trademind signup --email {email}")
        terminal.wait_for("Password:")
        terminal.type(PASSWORD)
        terminal.wait_for("Repeat for confirmation:")
        terminal.type(PASSWORD)
        terminal.wait_for(f"welcome, {email}")
        assert PASSWORD not in terminal.screen()
        # Billing (the platform's webhook) puts the new user on the pro plan.
        db.execute("update users set tier = 'pro', subscription_status = 'active' where email = %s", (email,))
        user_id = db.execute("select id from users where email = %s", (email,)).fetchone()[0]  # type: ignore[index]

        # Two strategies in plain words, each shown, then saved on "y" (the first one provisions the machine).
        for name, description in STRATEGIES.items():
            terminal.run(f'trademind strategy new "{description}" --name {name}')
            terminal.wait_for("start it? [y/N]:", 60)
            terminal.type("y")
            screen = terminal.wait_for("runs it", 120)
            assert f"saved {name}" in " ".join(screen.split())

        # The dashboard: wait until both traders have traded, and see a trade on the Activity tab.
        terminal.run("trademind")
        terminal.wait_for("realtime subscribed", 30)
        deadline = time.monotonic() + TRADE_TIMEOUT_SECS
        traded: dict[str, tuple[str, str]] = {}
        while len(traded) < len(STRATEGIES) and time.monotonic() < deadline:
            rows = db.execute(
                "select distinct on (tr.name) tr.name, t.symbol, t.side::text from trades t"
                " join signals s on s.id = t.signal_id join traders tr on tr.id = s.trader_id"
                " where t.user_id = %s and t.status = 'filled' order by tr.name, t.executed_at",
                (user_id,),
            ).fetchall()
            traded = {name: (symbol, side) for name, symbol, side in rows}
            time.sleep(1)
        assert set(traded) == set(STRATEGIES), f"traded within {TRADE_TIMEOUT_SECS} s: {sorted(traded)}"
        terminal.key("2")
        symbol, side = traded["Trend"]
        terminal.wait_for(lambda screen: symbol in screen and side in screen, 5)

        # Pause the first trader from the keyboard: focus the traders table (its first row), p.
        terminal.key("t")
        terminal.key("p")
        terminal.wait_for(
            lambda screen: any(
                line.split()[:2] == ["Trend", "paused"] for line in screen.splitlines() if line.split()
            ),
            10,
        )
        statuses = dict(
            db.execute("select name, status::text from traders where user_id = %s", (user_id,)).fetchall()
        )
        assert statuses == {"Trend": "paused", "Ride": "active"}
        terminal.key("q")
        terminal.wait_for(lambda screen: screen.rstrip().endswith("$"), 10)

        # Ask the AI about an open position, named by the id prefix the positions table shows (positions open
        # and close all the time here: list again until one is open at the moment of listing).
        mine = {
            str(row[0])[:8] for row in db.execute("select id from positions where user_id = %s", (user_id,))
        }
        deadline = time.monotonic() + TRADE_TIMEOUT_SECS
        shown: set[str] = set()
        while not shown and time.monotonic() < deadline:
            terminal.run("trademind positions --status open")
            screen = terminal.wait_for(lambda screen: "positions (page" in screen, 15)
            shown = set(re.findall(r"^│ ([0-9a-f]{8}) │", screen, re.MULTILINE))
            mine |= {
                str(row[0])[:8]
                for row in db.execute("select id from positions where user_id = %s", (user_id,))
            }
        assert shown and shown <= mine, f"no position open within {TRADE_TIMEOUT_SECS} s: {shown} {mine}"
        terminal.run(f'trademind ask "Where is my stop?" --position {min(shown)}')
        screen = terminal.wait_for("stop-loss", 60)
        assert "take-profit" in " ".join(screen.split())

        # Export the paused trader's trades: every one the database held when the export was typed.
        export = tmp_path / "trend-trades.csv"
        typed_at = db.execute("select now()").fetchone()[0]  # type: ignore[index]
        terminal.run(f"trademind trades --trader Trend --csv {export}")
        screen = terminal.wait_for(lambda screen: "row(s) to" in screen and screen.rstrip().endswith("$"), 15)
        exported = {row["id"]: row for row in csv.DictReader(io.StringIO(export.read_text()))}
        assert f"wrote {len(exported)} row(s) to" in screen
        held = dict(
            db.execute(
                "select t.id::text, t.updated_at from trades t join signals s on s.id = t.signal_id"
                " join traders tr on tr.id = s.trader_id where tr.user_id = %s and tr.name = 'Trend'",
                (user_id,),
            ).fetchall()
        )
        assert exported and set(exported) <= set(held), (sorted(exported), sorted(held))
        # A paused trader's open positions are still guarded, so only a close after the export may be missing.
        assert all(held[id_] >= typed_at for id_ in set(held) - set(exported)), (
            typed_at,
            held,
            sorted(exported),
        )
    finally:
        with FlyStandInClient() as fly:
            for (machine_id,) in db.execute(
                "select f.machine_id from fly_machines f join users u on u.id = f.user_id where u.email = %s",
                (email,),
            ).fetchall():
                fly.delete(machine_id, force=True)
        db.execute("delete from auth.users where email = %s", (email,))
