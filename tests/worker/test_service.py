"""`python -m worker` as a real process against the local stack: start-up, heartbeat, HTTP API, shutdown."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from devstack import keys
from devstack.stack import DevStack
from tests.factories import (
    AppUser,
    create_machine,
    create_trader,
    create_user,
    delete_user,
    machine_credential,
)

API_SECRET = "machine-api-secret-for-tests-0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningWorker:
    process: subprocess.Popen[str]
    url: str
    machine_id: str
    user: AppUser
    env: dict[str, str]

    def stop_and_collect(self, timeout_secs: float = 35) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=timeout_secs)
        return self.process.returncode, stderr


@pytest.fixture(scope="module")
def exchange_url() -> Iterator[str]:
    """Our own exchange simulator (the worker's market feed connects to it), replaying at 60x."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.exchange", "--port", str(port), "--speed", "60"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/api/v3/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError("the exchange simulator did not start")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def worker_env(
    stack: DevStack, user: AppUser, machine_id: str, port: int, exchange_url: str
) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "USER_ID": str(user.id),
        "MACHINE_ID": machine_id,
        "SUPABASE_URL": stack.config.api_url,
        "SUPABASE_ANON_KEY": keys.ANON_KEY,
        "MACHINE_TOKEN": user.machine_jwt(machine_id),
        "MACHINE_API_SECRET": API_SECRET,
        "VERSION": "v-test-1",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
        "FLY_VM_MEMORY_MB": "512",
        "HEARTBEAT_INTERVAL_SECS": "0.5",
        "LOG_LEVEL": "info",
        "BINANCE_BASE_URL": exchange_url,
    }


def start_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_healthy(url: str, process: subprocess.Popen[str], timeout_secs: float = 20) -> httpx.Response:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"worker exited {process.returncode}: {process.stderr.read() if process.stderr else ''}"
            )
        try:
            response = httpx.get(f"{url}/health", timeout=1)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("worker did not become healthy")


@contextlib.contextmanager
def running_worker(
    stack: DevStack,
    db: psycopg.Connection[Any],
    exchange_url: str,
    prepare: Callable[[AppUser, uuid.UUID], None] | None = None,
) -> Iterator[RunningWorker]:
    """A worker process for a new user with one trader (`prepare` writes more rows before it starts)."""
    user = create_user(db)
    trader_id = create_trader(db, user, "worker test trader")
    if prepare is not None:
        prepare(user, trader_id)
    machine_id = f"m-{uuid.uuid4().hex[:12]}"
    db.execute(
        "insert into public.fly_machines (user_id, machine_id, status, region, memory_mb)"
        " values (%s, %s, 'starting', 'iad', 256)",
        (user.id, machine_id),
    )
    port = free_port()
    env = worker_env(stack, user, machine_id, port, exchange_url)
    process = start_worker(env)
    running = RunningWorker(process, f"http://127.0.0.1:{port}", machine_id, user, env)
    try:
        wait_healthy(running.url, process)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)
        delete_user(db, user)


@pytest.fixture
def worker(stack: DevStack, db: psycopg.Connection[Any], exchange_url: str) -> Iterator[RunningWorker]:
    with running_worker(stack, db, exchange_url) as running:
        yield running


def machine_row(db: psycopg.Connection[Any], machine_id: str) -> tuple[Any, ...]:
    row = db.execute(
        "select status::text, version, now() - last_heartbeat < interval '5 seconds' from public.fly_machines"
        " where machine_id = %s",
        (machine_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_worker_heartbeats_and_reports_health(worker: RunningWorker, db: psycopg.Connection[Any]) -> None:
    health = httpx.get(f"{worker.url}/health").json()

    assert health["status"] == "healthy"
    assert (health["version"], health["machineId"], health["activeTraders"]) == (
        "v-test-1",
        worker.machine_id,
        1,
    )
    assert set(health["components"]) == {
        "heartbeat", "sizing-gate", "trader-sync", "market-feed", "binance-health", "scheduler",
        "signal-engine", "position-monitor", "log-shipper",
    }  # fmt: skip
    assert set(health["components"].values()) <= {"starting", "running"}
    assert 0 < health["startupSecs"] < 60  # process start (imports included) to /health answering
    # One thread imports and builds; the resolver's threads (getaddrinfo) may run beside it: CPU within twice
    # the wall time.
    assert 0 < health["startupCpuSecs"] <= 2 * health["startupSecs"] + 0.01
    assert machine_row(db, worker.machine_id) == ("running", "v-test-1", True)


def test_metrics_have_the_seed_fields(worker: RunningWorker) -> None:
    metrics = httpx.get(f"{worker.url}/metrics").json()
    prometheus = httpx.get(f"{worker.url}/metrics/prometheus").text

    assert set(metrics) == {
        "activeTraders", "signalsChecked1h", "signalsTriggered1h", "openPositions", "watchingSignals",
        "memoryUsageMB", "websocketStatus", "lastKlineUpdate", "load",
    }  # fmt: skip
    assert metrics["activeTraders"] == 1
    assert 10 < metrics["memoryUsageMB"] < 500
    load = metrics["load"]
    assert set(load) == {
        "sweepLoadRatio", "sweepsMissed", "cpuPercent", "cpuCount", "memoryMb", "memoryLimitMb",
        "predictedSweepLoadRatio",
    }  # fmt: skip
    assert load["memoryLimitMb"] == 512
    assert 10 < load["memoryMb"] < 500, "the worker and its sandbox processes, PSS"
    assert load["cpuCount"] >= 1 and load["cpuPercent"] >= 0 and load["sweepsMissed"] == 0
    assert load["predictedSweepLoadRatio"] is None, "no trader held: one trader on one symbol fits"
    assert f'trademind_active_traders{{machine_id="{worker.machine_id}",version="v-test-1"}} 1' in prometheus


def test_metrics_market_shows_the_market_as_the_worker_holds_it(worker: RunningWorker) -> None:
    def ticker_seen() -> dict[str, Any] | None:
        state: dict[str, Any] = httpx.get(f"{worker.url}/metrics/market").json()
        return state if "BTCUSDT" in state["tickers"] else None

    deadline = time.monotonic() + 20
    while (state := ticker_seen()) is None:
        assert time.monotonic() < deadline, "no BTCUSDT ticker reached the worker"
        time.sleep(0.1)
    server_ms = httpx.get(f"{worker.env['BINANCE_BASE_URL']}/api/v3/time").json()["serverTime"]

    series = state["klines"]["BTCUSDT@1m"]  # the test trader's timeframe, backfilled
    ticker = state["tickers"]["BTCUSDT"]
    assert series["candles"] >= 100 and series["lastClose"] > 0 and series["lastVolume"] >= 0
    assert float(ticker["lastPrice"]) > 0
    assert series["lastOpenTimeMs"] <= ticker["eventTimeMs"] <= state["marketTimeMs"]
    # market time, not wall time (a 60x replay from January 2025): within a real second of the server
    assert abs(state["marketTimeMs"] - server_ms) < 60_000


def test_post_endpoints_need_the_bearer_secret(worker: RunningWorker) -> None:
    missing = httpx.post(f"{worker.url}/reload-traders")
    wrong = httpx.post(
        f"{worker.url}/shutdown", headers={"Authorization": "Bearer nope"}, json={"reason": "user_request"}
    )

    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "missing_authorization")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (403, "invalid_secret")
    assert httpx.get(f"{worker.url}/health").status_code == 200


def test_reload_traders_counts_what_the_database_holds(
    worker: RunningWorker, db: psycopg.Connection[Any]
) -> None:
    create_trader(db, worker.user, "added later")
    headers = {"Authorization": f"Bearer {API_SECRET}"}

    response = httpx.post(f"{worker.url}/reload-traders", headers=headers)

    assert response.json() == {"success": True, "tradersLoaded": 2}


def test_positions_lists_open_positions(
    stack: DevStack, db: psycopg.Connection[Any], exchange_url: str
) -> None:
    def open_position(user: AppUser, trader_id: uuid.UUID) -> None:
        # Held before the worker starts (it recovers it), with no stop the replayed market could reach.
        signal_id = db.execute(
            "insert into public.signals (trader_id, user_id, symbol, status, trigger_price)"
            " values (%s, %s, 'BTCUSDT', 'position_open', 97000) returning id",
            (trader_id, user.id),
        ).fetchone()
        assert signal_id is not None
        db.execute(
            "insert into public.positions (signal_id, user_id, symbol, side, entry_price, size)"
            " values (%s, %s, 'BTCUSDT', 'long', 97000.5, 0.0125)",
            (signal_id[0], user.id),
        )

    with running_worker(stack, db, exchange_url, open_position) as worker:
        positions = httpx.get(f"{worker.url}/positions").json()["positions"]

    assert [(p["symbol"], p["side"], str(p["entry_price"]), str(p["size"])) for p in positions] == [
        ("BTCUSDT", "long", "97000.5", "0.0125")
    ]


def test_shutdown_reports_final_state_and_exits(worker: RunningWorker, db: psycopg.Connection[Any]) -> None:
    headers = {"Authorization": f"Bearer {API_SECRET}"}

    bad = httpx.post(f"{worker.url}/shutdown", headers=headers, json={"reason": "because"})
    response = httpx.post(f"{worker.url}/shutdown", headers=headers, json={"reason": "user_request"})
    exit_code, stderr = worker.stop_and_collect()

    assert bad.status_code == 400
    assert "'reason' must be one of" in bad.json()["error"]["message"]
    expected = {"success": True, "message": "Machine shutting down gracefully", "openPositions": 0}
    assert response.json() == expected | {"watchingSignals": 0}
    assert exit_code == 0
    assert "worker stopped reason=user_request" in stderr
    assert machine_row(db, worker.machine_id)[0] == "stopped"


def test_sigterm_stops_gracefully_and_fast(worker: RunningWorker, db: psycopg.Connection[Any]) -> None:
    started = time.monotonic()

    exit_code, stderr = worker.stop_and_collect()

    assert exit_code == 0
    assert time.monotonic() - started < 30
    assert "worker stopped reason=SIGTERM" in stderr
    assert machine_row(db, worker.machine_id)[0] == "stopped"


def test_logs_have_rfc3339_timestamps_and_no_secrets(worker: RunningWorker) -> None:
    _, stderr = worker.stop_and_collect()

    lines = [line for line in stderr.splitlines() if line]
    assert lines
    assert all(line[:24].endswith("Z") and line[10] == "T" for line in lines)
    for secret in (worker.env["MACHINE_TOKEN"], API_SECRET, keys.ANON_KEY):
        assert secret not in stderr


def test_missing_settings_stop_startup_with_one_clear_line(stack: DevStack) -> None:
    env = {"PATH": os.environ["PATH"], "SUPABASE_URL": "not a url", "MACHINE_API_SECRET": "short"}

    result = subprocess.run(
        [sys.executable, "-m", "worker"], env=env, capture_output=True, text=True, timeout=30, check=False
    )

    assert result.returncode == 78
    assert len(result.stderr.strip().splitlines()) == 1
    for name in (
        "USER_ID is missing",
        "MACHINE_ID is missing",
        "MACHINE_TOKEN is missing",
        "SUPABASE_URL is invalid",
        "MACHINE_API_SECRET is invalid",
    ):
        assert name in result.stderr


def test_a_token_for_another_user_is_refused_at_startup(
    stack: DevStack, db: psycopg.Connection[Any], exchange_url: str
) -> None:
    owner, intruder = create_user(db), create_user(db)
    try:
        machine_id = f"m-{uuid.uuid4().hex[:12]}"
        db.execute(
            "insert into public.fly_machines (user_id, machine_id) values (%s, %s)", (owner.id, machine_id)
        )
        env = worker_env(stack, owner, machine_id, free_port(), exchange_url) | {
            "MACHINE_TOKEN": intruder.machine_jwt(machine_id)
        }

        result = subprocess.run(
            [sys.executable, "-m", "worker"], env=env, capture_output=True, text=True, timeout=30, check=False
        )

        # PostgREST's pre-request hook refuses a token whose machine row is not its user's live machine.
        assert result.returncode == 78
        assert "machine token revoked" in result.stderr
    finally:
        delete_user(db, owner)
        delete_user(db, intruder)


def test_a_restarted_machine_renews_its_expired_token_before_it_starts(
    stack: DevStack, db: psycopg.Connection[Any], exchange_url: str
) -> None:
    # Fly restarts a crashed machine with the env it was given, whose token may be hours old by then.
    user = create_user(db)
    try:
        machine_id = create_machine(db, user, status="starting")
        expired = keys.mint_jwt(
            "trader_machine",
            user.id,
            valid_for_secs=-60,
            extra_claims={"machine_id": machine_id, "machine_gen": 1},
        )
        port = free_port()
        env = worker_env(stack, user, machine_id, port, exchange_url) | {
            "MACHINE_TOKEN": expired,
            "MACHINE_CREDENTIAL": machine_credential(machine_id),
        }
        process = start_worker(env)
        try:
            health = wait_healthy(f"http://127.0.0.1:{port}", process).json()
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)

        assert health["components"]["machine-token"] == "running"
        assert "machine token renewed" in stderr
        assert expired not in stderr and env["MACHINE_CREDENTIAL"] not in stderr
    finally:
        delete_user(db, user)
