"""A signed-in trader for console commands: a user written as sign-up would, and a session in a profile."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner, Result

from cli.console.session import Profile, Session
from cli.main import app
from devstack.fly.client import FlyStandInClient
from devstack.keys import mint_jwt
from devstack.stack import DevStack
from tests.factories import AppUser, create_user, delete_user

ERROR_LINE = re.compile(r"^error: [^\n]+\n$")


@dataclass(frozen=True)
class Trader:
    """The signed-in user and their profile directory."""

    user: AppUser
    config_dir: Path

    def sign_in(self, valid_for_secs: int = 3600) -> None:
        token = mint_jwt("authenticated", self.user.id, valid_for_secs=valid_for_secs,
                         extra_claims={"email": self.user.email})  # fmt: skip
        session = Session(token, None, int(time.time()) + valid_for_secs, str(self.user.id), self.user.email)
        Profile("default", self.config_dir).save_session(session)


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "config"
    monkeypatch.setenv("TRADEMIND_CONFIG_DIR", str(directory))
    for name in ("TRADEMIND_URL", "TRADEMIND_ANON_KEY", "TRADEMIND_PROFILE", "TRADEMIND_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return directory


@pytest.fixture
def trader(db: psycopg.Connection[Any], config_dir: Path) -> Iterator[Trader]:
    """A pro user (subscription cancelled, so nothing provisions a machine for them) who is signed in."""
    user = create_user(db, tier="pro")
    db.execute("update public.users set subscription_status = 'cancelled' where id = %s", (user.id,))
    signed_in = Trader(user, config_dir)
    signed_in.sign_in()
    yield signed_in
    delete_user(db, user)


def invoke(*args: str, input_text: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input_text)


def assert_error(result: Result, exit_code: int, pattern: str) -> None:
    """One line on stderr naming the problem, the exit code, and no traceback."""
    assert result.exit_code == exit_code, (result.exit_code, result.stdout, result.stderr)
    assert ERROR_LINE.match(result.stderr), result.stderr
    assert re.search(pattern, result.stderr), result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.fixture
def fly(stack: DevStack) -> Iterator[FlyStandInClient]:
    with FlyStandInClient() as client:
        yield client


@pytest.fixture
def subscriber(db: psycopg.Connection[Any], trader: Trader, fly: FlyStandInClient) -> Iterator[Trader]:
    """The signed-in trader with an active pro subscription; their machines are force-destroyed afterwards."""
    db.execute("update users set subscription_status = 'active' where id = %s", (trader.user.id,))
    yield trader
    for (machine_id,) in db.execute(
        "select machine_id from fly_machines where user_id = %s", (trader.user.id,)
    ).fetchall():
        fly.delete(machine_id, force=True)


def machine_health(
    fly: FlyStandInClient, machine_id: str, check: Any, timeout_secs: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        response = fly.machine_http(machine_id, "/health")
        if response.status_code == 200 and check(response.json()):
            answer: dict[str, Any] = response.json()
            return answer
        time.sleep(0.1)
    raise AssertionError(f"machine {machine_id}: /health never matched; last {response.text}")
