"""The session: who is signed in, the profile file's permissions, and sessions that are missing or expired."""

from __future__ import annotations

import json
import stat
from typing import Any

import psycopg

from cli.console.session import Profile
from tests.cli.console.conftest import Trader, assert_error, invoke


def test_whoami_names_the_account_plan_and_cost(db: psycopg.Connection[Any], trader: Trader) -> None:
    result = invoke("whoami")
    as_json = json.loads(invoke("whoami", "--json").stdout)

    assert result.exit_code == 0, result.stderr
    assert trader.user.email in result.stdout and "plan pro (cancelled), trading: paper" in result.stdout
    assert "machine: none" in result.stdout and "this month: $" in result.stdout
    assert as_json["user"]["id"] == str(trader.user.id) and as_json["profile"] == "default"
    assert as_json["url"] == "http://127.0.0.1:54321"


def test_the_profile_file_is_private(trader: Trader) -> None:
    path = Profile("default", trader.config_dir).path

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_profiles_keep_separate_sessions(trader: Trader) -> None:
    elsewhere = invoke("--profile", "staging", "whoami")
    bad_name = invoke("--profile", "../x", "whoami")

    assert_error(elsewhere, 1, r"not signed in \(profile staging\): run trademind login")
    assert_error(bad_name, 2, r"--profile must be 1-64 letters")


def test_an_expired_session_says_to_sign_in_again(trader: Trader) -> None:
    trader.sign_in(valid_for_secs=-120)

    result = invoke("traders", "list")

    assert_error(result, 1, r"your session expired: run trademind login")


def test_a_session_the_server_refuses_is_one_line(trader: Trader) -> None:
    profile = Profile("default", trader.config_dir)
    session = profile.session()
    assert session is not None
    forged = session.access_token[:-4] + ("AAAA" if not session.access_token.endswith("AAAA") else "BBBB")
    profile.save_session(session.__class__(forged, None, session.expires_at, session.user_id, session.email))

    result = invoke("whoami")

    assert_error(result, 1, r"your session is no longer valid .*: run trademind login")


def test_an_unreachable_project_is_one_line(trader: Trader, monkeypatch: Any) -> None:
    monkeypatch.setenv("TRADEMIND_URL", "http://127.0.0.1:9")

    result = invoke("traders", "list")

    assert_error(result, 1, r"cannot reach http://127.0.0.1:9 \(ConnectError\)")
