"""Chaos, short: a worker machine SIGKILLed during a replay with exchange and Gemini faults leaves Postgres
consistent (tests/worker/chaos.py; `make chaos` runs the long case and prints the start-up figures)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psycopg

from devstack.stack import DevStack
from tests.worker.chaos import ChaosOptions, run_chaos, write_report


def test_kills_during_a_faulty_replay_leave_postgres_consistent(
    stack: DevStack, db: psycopg.Connection[Any]
) -> None:
    options = ChaosOptions(
        kills=int(os.environ.get("CHAOS_KILLS", "3")),
        market_hours=float(os.environ.get("CHAOS_MARKET_HOURS", "12")),
        speed=float(os.environ.get("CHAOS_SPEED", "600")),
    )

    report = run_chaos(stack, db, options)

    figures = write_report(report, Path(stack.config.state_dir) / "chaos" / "report.json")
    print("chaos:", json.dumps(figures))
    assert len(report.restarts) == options.kills + 1
    assert report.open_positions_at_check > 0 and report.closed_positions > 0
