"""A whole trader's flow typed into a real terminal (tmux, 80x24): sign up, create a strategy in plain words,
watch the worker trade it in the dashboard, pause it there. The test only types keys and reads the screen,
except where the platform itself acts: billing (tier and subscription) is set in SQL, as its webhook would.
"""

from __future__ import annotations

import os
import shutil
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
DESCRIPTION = "Trade BTC and ETH on the 1 minute chart when the trend is up"
TRADE_TIMEOUT_SECS = 240

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


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


def test_signup_strategy_watch_a_trade_and_pause(
    db: psycopg.Connection[Any], terminal: Terminal, stack: DevStack
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

        # A strategy in plain words: shown, then saved on "y"; the machine is provisioned for it.
        terminal.type(f'clear; trademind strategy new "{DESCRIPTION}" --name Trend')
        terminal.wait_for("start it? [y/N]:", 60)
        terminal.type("y")
        screen = terminal.wait_for("runs it", 120)
        assert "saved Trend" in " ".join(screen.split())

        # The dashboard: wait for the worker's first trade and see it on the Activity tab.
        terminal.type("clear; trademind")
        terminal.wait_for("realtime subscribed", 30)
        user_id = db.execute("select id from users where email = %s", (email,)).fetchone()[0]  # type: ignore[index]
        deadline = time.monotonic() + TRADE_TIMEOUT_SECS
        trade = None
        while trade is None and time.monotonic() < deadline:
            trade = db.execute(
                "select symbol, side from trades where user_id = %s and status = 'filled' limit 1", (user_id,)
            ).fetchone()
            time.sleep(1)
        assert trade is not None, f"the worker made no trade within {TRADE_TIMEOUT_SECS} s"
        terminal.key("2")
        terminal.wait_for(lambda screen: trade[0] in screen and trade[1] in screen, 5)

        # Pause the trader from the keyboard: focus the traders table, p.
        terminal.key("t")
        terminal.key("p")
        terminal.wait_for(
            lambda screen: any(
                line.split()[:2] == ["Trend", "paused"] for line in screen.splitlines() if line.split()
            ),
            10,
        )
        status = db.execute("select status from traders where user_id = %s", (user_id,)).fetchone()
        assert status == ("paused",)
        terminal.key("q")
        terminal.wait_for(lambda screen: screen.rstrip().endswith("$"), 10)
    finally:
        with FlyStandInClient() as fly:
            for (machine_id,) in db.execute(
                "select f.machine_id from fly_machines f join users u on u.id = f.user_id where u.email = %s",
                (email,),
            ).fetchall():
                fly.delete(machine_id, force=True)
        db.execute("delete from auth.users where email = %s", (email,))
