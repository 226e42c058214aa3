"""Machine lifecycle: a cold worker start to healthy (20 traders x 100 symbols), and rolling updates of 50
machines through update-machines against the Fly stand-in (wall time, max unavailable observed).

Uses the running dev stack (started if needed). "Unavailable" is measured from the stand-in's own machine
events: from a machine's update call until its new version's process started; the function additionally
holds each batch until /health passes, so the figure is a lower bound of the time a user is without a worker.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.measurement import Measurement, median_and_p95
from devstack import keys
from devstack.config import EXCHANGE_PORT
from devstack.fly.client import FlyStandInClient
from devstack.fly.machines import free_port
from devstack.stack import DevStack

NEEDS_STACK = True  # python -m bench starts the local stack for it

START_ROUNDS = 5
TRADERS = 20
SYMBOLS_PER_TRADER = 100
FLEET_SIZE = 50
IMAGE_REPOSITORY = "registry.fly.io/trademind-workers"
SIGNAL_CODE = "def check_signal(symbol, ticker, klines):\n    return False\n"


def _create_user(conn: psycopg.Connection[Any], tier: str = "pro") -> uuid.UUID:
    user_id = uuid.uuid4()
    conn.execute(
        "insert into auth.users (id, aud, role, email) values (%s, 'authenticated', 'authenticated', %s)",
        (user_id, f"bench-{user_id.hex[:12]}@example.com"),
    )
    conn.execute("update public.users set tier = %s where id = %s", (tier, user_id))
    return user_id


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_environment(
    stack: DevStack, user_id: uuid.UUID, machine_id: str, http_port: int, binance_url: str
) -> dict[str, str]:
    """What a local machine's `python -m worker` is given: the stack, a fresh machine token, a local
    exchange simulator (nothing may reach a real Binance host) and quiet logs."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "USER_ID": str(user_id),
        "MACHINE_ID": machine_id,
        "SUPABASE_URL": stack.config.api_url,
        "SUPABASE_ANON_KEY": keys.ANON_KEY,
        "MACHINE_TOKEN": keys.mint_jwt("trader_machine", user_id, extra_claims={"machine_id": machine_id}),
        "MACHINE_API_SECRET": "bench-machine-api-secret-0123456789",
        "VERSION": "bench",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(http_port),
        "LOG_LEVEL": "warning",
        "BINANCE_BASE_URL": binance_url,
    }


def _cold_start(stack: DevStack, conn: psycopg.Connection[Any]) -> tuple[list[float], list[float]]:
    """Seconds from exec to the first 200 on /health, and peak RSS then, over START_ROUNDS fresh processes."""
    user_id = _create_user(conn)
    symbols = [f"B{index:03d}USDT" for index in range(SYMBOLS_PER_TRADER)]
    for index in range(TRADERS):
        conn.execute(
            "insert into public.traders (user_id, name, signal_code, ai_instructions, timeframes,"
            " check_interval, reanalysis_interval, symbols) values (%s, %s, %s, 'Be careful.',"
            " array['1m', '1h'], '1m_close', '5m', %s)",
            (user_id, f"bench trader {index}", SIGNAL_CODE, symbols),
        )
    machine_id = f"bench-{uuid.uuid4().hex[:12]}"
    conn.execute(
        "insert into public.fly_machines (user_id, machine_id, status) values (%s, %s, 'starting')",
        (user_id, machine_id),
    )
    seconds, peaks = [], []
    try:
        for _ in range(START_ROUNDS):
            port = free_port()
            env = worker_environment(stack, user_id, machine_id, port, f"http://127.0.0.1:{EXCHANGE_PORT}")
            started = time.perf_counter()
            process = subprocess.Popen(
                [sys.executable, "-m", "worker"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                while True:
                    if process.poll() is not None:
                        raise RuntimeError(
                            f"the worker exited with {process.returncode} before it was healthy"
                        )
                    try:
                        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                        if health.status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.01)
                seconds.append(time.perf_counter() - started)
                peaks.append(_peak_rss_mb(process.pid))
                if health.json()["activeTraders"] != TRADERS:
                    raise RuntimeError(f"the worker loaded {health.json()['activeTraders']} traders")
            finally:
                process.terminate()
                process.wait(timeout=40)
    finally:
        conn.execute("delete from auth.users where id = %s", (user_id,))
    return seconds, peaks


def _call(stack: DevStack, name: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{stack.config.api_url}/functions/v1/{name}",
        json=body,
        headers={"apikey": keys.ANON_KEY, "Authorization": f"Bearer {keys.SERVICE_ROLE_KEY}"},
        timeout=150,
    )
    if response.status_code >= 300:
        raise RuntimeError(f"{name} answered {response.status_code}: {response.text[:300]}")
    result: dict[str, Any] = response.json()
    return result


def _down_intervals(fly: FlyStandInClient, machine_ids: list[str]) -> list[tuple[int, int]]:
    intervals = []
    for machine_id in machine_ids:
        events = list(reversed(fly.events(machine_id)))
        update_ms = [event["timestamp"] for event in events if event["type"] == "update"][-1]
        started_ms = next(
            e["timestamp"] for e in events if e["type"] == "start" and e["timestamp"] >= update_ms
        )
        intervals.append((update_ms, started_ms))
    return intervals


def _max_overlap(intervals: list[tuple[int, int]]) -> int:
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = best = 0
    for _, step in points:
        current += step
        best = max(best, current)
    return best


def _rolling_updates(stack: DevStack, conn: psycopg.Connection[Any]) -> list[Measurement]:
    user_ids = [_create_user(conn) for _ in range(FLEET_SIZE)]
    results: list[Measurement] = []
    with FlyStandInClient() as fly:
        try:
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=10) as pool:
                provisioned = list(
                    pool.map(
                        lambda user_id: _call(stack, "provision-machine", {"userId": str(user_id)}), user_ids
                    )
                )
            provision_secs = time.perf_counter() - started
            machine_ids = [body["machineId"] for body in provisioned]
            results.append(
                Measurement(f"provision {FLEET_SIZE} machines", provision_secs, "s", "10 concurrent calls")
            )
            for max_unavailable in (5, 10):
                image = f"{IMAGE_REPOSITORY}:bench-{uuid.uuid4().hex[:8]}"
                started = time.perf_counter()
                report = _call(
                    stack,
                    "update-machines",
                    {
                        "image": image,
                        "maxUnavailable": max_unavailable,
                        "userIds": [str(user_id) for user_id in user_ids],
                        "deadlineSecs": 140,
                    },
                )
                wall_secs = time.perf_counter() - started
                if report["summary"]["updated"] != FLEET_SIZE:
                    raise RuntimeError(f"rollout incomplete: {report['summary']}")
                durations = [machine["durationMs"] / 1000 for machine in report["machines"]]
                median, p95 = median_and_p95(durations)
                observed = _max_overlap(_down_intervals(fly, machine_ids))
                label = f"rolling update {FLEET_SIZE}, max_unavailable={max_unavailable}"
                results += [
                    Measurement(f"{label}: wall", wall_secs, "s", f"{len(durations)} machines updated"),
                    Measurement(f"{label}: per machine", median, "s", f"median; p95 {p95:.2f}s"),
                    Measurement(
                        f"{label}: max unavailable", observed, "machines", "from the stand-in's events"
                    ),
                ]
        finally:
            for (machine_id,) in conn.execute(
                "select machine_id from public.fly_machines where user_id = any(%s)", (user_ids,)
            ).fetchall():
                fly.delete(machine_id, force=True)
            conn.execute("delete from auth.users where id = any(%s)", (user_ids,))
    return results


def run() -> list[Measurement]:
    stack = DevStack()
    stack.up()
    with stack.postgres.connect(autocommit=True) as conn:
        seconds, peaks = _cold_start(stack, conn)
        median_secs, p95_secs = median_and_p95(seconds)
        results = [
            Measurement(
                f"cold start to healthy ({TRADERS} traders x {SYMBOLS_PER_TRADER} symbols)",
                median_secs,
                "s",
                f"median of {START_ROUNDS}; p95 {p95_secs:.2f}s",
            ),
            Measurement(
                "peak RSS at healthy", statistics.median(peaks), "MB", f"median; max {max(peaks):.1f}MB"
            ),
        ]
        results += _rolling_updates(stack, conn)
    return results
