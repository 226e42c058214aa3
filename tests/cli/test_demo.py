"""`trademind demo`, short (12 market hours at 600x, about 80 s): its summary agrees with the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg

from devstack.config import EXCHANGE_DEFAULT_SPEED, EXCHANGE_PORT
from devstack.stack import DevStack

DEMO_TIMEOUT_SECS = 150
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_demo(output: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The demo user's console session goes to a private config dir, not the user's own.
    environment = {**os.environ, "TRADEMIND_CONFIG_DIR": str(output / "config")}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--output", str(output), *args],
        capture_output=True, text=True, timeout=DEMO_TIMEOUT_SECS, check=False, env=environment,
    )  # fmt: skip


def one(db: psycopg.Connection[Any], sql: str, *params: Any) -> Any:
    row = db.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def test_short_demo_summary_matches_the_database(
    stack: DevStack, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # Arrange / Act: from the default start (2025-01-03 03:00) the strategy opens and closes positions.
    result = run_demo(tmp_path, "--market-hours", "12", "--speed", "600")

    # Assert: it finished, and left a chart and a summary.
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [summary_path] = tmp_path.glob("demo-*.json")
    report = json.loads(summary_path.read_text())
    summary, user_id = report["summary"], report["user_id"]
    chart = Path(report["chart"])
    assert chart.parent == tmp_path and chart.read_bytes().startswith(PNG_MAGIC)
    assert f"chart: {chart}" in result.stdout.replace("\n", "")
    assert report["realtime_events"] > 0
    assert report["worker_peak_rss_mb"] > 0

    # Every count in the summary is the database's.
    assert summary["signals"] == one(db, "select count(*) from signals where user_id = %s", user_id) > 0
    decisions = dict(
        db.execute(
            "select decision::text, count(*) from analysis_history where user_id = %s group by 1", (user_id,)
        ).fetchall()
    )
    assert summary["decisions"] == decisions
    assert summary["trades_filled"] == one(
        db, "select count(*) from trades where user_id = %s and status = 'filled'", user_id
    )
    closed = db.execute(
        "select id, pnl, realized_pnl from positions where user_id = %s and status = 'closed'", (user_id,)
    ).fetchall()
    assert summary["closed_positions"] == len(closed) >= 1
    assert summary["winning_positions"] == sum(1 for _, pnl, _ in closed if pnl > 0)

    # Every closed position's PnL is exactly what its trades imply; the summary's PnL is their sum.
    for position_id, pnl, realized in closed:
        implied, realized_by_fills = db.execute(
            "select sum(case when side = 'SELL' then price * quantity else -price * quantity end - fee), "
            "sum(coalesce(realized_pnl, 0)) from trades where position_id = %s and status = 'filled'",
            (position_id,),
        ).fetchone() or (None, None)
        assert (pnl, realized) == (implied, realized_by_fills), position_id
    assert Decimal(summary["realized_pnl_usd"]) == sum((pnl for _, pnl, _ in closed), Decimal(0))

    # Without --keep the demo's machine is destroyed and the stack's own exchange is back.
    assert one(db, "select status::text from fly_machines where user_id = %s", user_id) == "destroyed"
    assert stack.registry.live("exchange") is not None
    state = httpx.get(f"http://127.0.0.1:{EXCHANGE_PORT}/_sim/state", timeout=5).json()
    assert (state["speed"], state["paused"]) == (EXCHANGE_DEFAULT_SPEED, False)

    # It ends with the one command that opens the dashboard on its data, as the demo user.
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line.endswith("trademind dev up --quiet && .venv/bin/trademind --profile demo"), last_line
    # The saved session renews itself: marked expired, whoami still answers, on a new access token.
    profile_path = tmp_path / "config" / "profiles" / "demo.json"
    profile = json.loads(profile_path.read_text())
    first_token = profile["session"]["access_token"]
    profile["session"]["expires_at"] = 0
    profile_path.write_text(json.dumps(profile))
    whoami = subprocess.run(
        [sys.executable, "-m", "cli.main", "--profile", "demo", "whoami", "--json"], capture_output=True,
        text=True, check=True, env={**os.environ, "TRADEMIND_CONFIG_DIR": str(tmp_path / "config")},
    )  # fmt: skip
    assert json.loads(whoami.stdout)["user"]["id"] == user_id
    assert json.loads(profile_path.read_text())["session"]["access_token"] != first_token


def test_demo_fails_loudly_when_the_start_is_outside_the_recordings(stack: DevStack, tmp_path: Path) -> None:
    result = run_demo(tmp_path, "--start", "2030-01-01T00:00:00Z", "--market-hours", "1")

    assert result.returncode == 1
    assert "demo failed: exchange simulator:" in result.stderr.replace("\n", " ")
    assert not list(tmp_path.glob("demo-*"))
    assert stack.registry.live("exchange") is not None
