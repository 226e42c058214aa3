"""Sign-up, sign-in, refresh and sign-out through Supabase Auth (the local stack's GoTrue stand-in) as a
trader does it: typer's runner typing into the prompts, the session kept in the profile."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cli.console import auth
from cli.console.errors import ConsoleError
from cli.console.session import Profile
from tests.cli.console.conftest import assert_error, invoke

PASSWORD = "correct horse battery 9"


@pytest.fixture
def email(db: psycopg.Connection[Any], config_dir: Path) -> Iterator[str]:
    """A fresh address; its account is removed afterwards."""
    address = f"trader-{uuid.uuid4().hex[:10]}@example.com"
    yield address
    db.execute("delete from auth.users where email = %s", (address,))


def test_signup_then_login_keep_the_session_in_the_profile(config_dir: Path, email: str) -> None:
    signed_up = invoke("signup", input_text=f"{email}\n{PASSWORD}\n{PASSWORD}\n")
    profile = Profile("default", config_dir)
    first = profile.session()
    logged_in = invoke("login", "--email", email, input_text=f"{PASSWORD}\n")
    whoami = invoke("whoami")

    assert signed_up.exit_code == 0, signed_up.stderr
    assert f"welcome, {email}" in signed_up.stdout and PASSWORD not in signed_up.stdout
    assert first is not None and first.email == email and first.refresh_token
    assert logged_in.exit_code == 0 and f"signed in as {email}" in logged_in.stdout
    second = profile.session()
    assert second is not None and second.access_token != first.access_token
    assert whoami.exit_code == 0 and email in whoami.stdout and "plan free" in whoami.stdout


def test_bad_credentials_and_accounts_are_one_line(config_dir: Path, email: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("TRADEMIND_PASSWORD", PASSWORD)
    invoke("signup", "--email", email)

    again = invoke("signup", "--email", email)
    monkeypatch.setenv("TRADEMIND_PASSWORD", "not the password")
    wrong = invoke("login", "--email", email)
    unknown = invoke("login", "--email", f"nobody-{uuid.uuid4().hex[:6]}@example.com")
    monkeypatch.setenv("TRADEMIND_PASSWORD", "short")
    weak = invoke("signup", "--email", f"x{email}")

    assert_error(again, 1, r"an account with this email exists already: use trademind login")
    assert_error(wrong, 1, r"^error: wrong email or password$")
    assert_error(unknown, 1, r"^error: wrong email or password$")
    assert_error(weak, 1, r"the password is too weak")


def test_a_session_about_to_expire_is_refreshed_and_saved(
    config_dir: Path, email: str, monkeypatch: Any
) -> None:
    monkeypatch.setenv("TRADEMIND_PASSWORD", PASSWORD)
    invoke("signup", "--email", email)
    profile = Profile("default", config_dir)
    old = profile.session()
    assert old is not None
    profile.save_session(dataclasses.replace(old, expires_at=int(time.time()) + 20))

    listed = invoke("traders", "list")

    assert listed.exit_code == 0, listed.stderr
    fresh = profile.session()
    assert fresh is not None
    assert fresh.access_token != old.access_token and fresh.refresh_token != old.refresh_token
    assert fresh.expires_at > time.time() + 3000


def test_logout_ends_the_session_on_the_server_too(config_dir: Path, email: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("TRADEMIND_PASSWORD", PASSWORD)
    invoke("signup", "--email", email)
    profile = Profile("default", config_dir)
    session = profile.session()
    assert session is not None

    logged_out = invoke("logout")
    after = invoke("whoami")

    assert logged_out.exit_code == 0 and f"signed out {email}" in logged_out.stdout
    assert profile.session() is None
    assert_error(after, 1, r"not signed in \(profile default\)")
    with pytest.raises(ConsoleError, match="your session has ended"):
        auth.refresh(profile.endpoint(), session)
