"""The worker's own start-up, process start -> /health answering 200, over many restarts (issue 22).

What `make chaos` reports, without the 15-minute replay: one user with a trader and a machine row on the
local stack, and `python -m worker` started STARTUP_ROUNDS times (default 20), each time pinned to one core as
the Fly stand-in pins a shared-cpu-1x machine, and SIGKILLed once healthy as the chaos run kills it. The
figures are the worker's own `startupSecs` and `startupCpuSecs` from /health (kernel process start, imports
included), so the platform's restart and this script's polling are not in them.

Interleaved A/B: `STARTUP_BASELINE=/path/to/other/checkout python -m bench bench_worker_startup` alternates
rounds between this checkout's worker and the other one's (same interpreter and virtualenv, same user), so
both see the same host load; the table then has both sides and their ratio of medians.
`STARTUP_BYTECODE=none` starts every worker without a bytecode cache (nothing read, nothing written: every
module compiled from source), as the machine image did before it shipped its bytecode.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.bench_lifecycle import worker_environment
from bench.measurement import Measurement, median_and_p95
from devstack.config import EXCHANGE_PORT
from devstack.fly.guest import pin_to_cpus
from devstack.fly.machines import free_port
from devstack.stack import DevStack

NEEDS_STACK = True  # python -m bench starts the local stack for it

REPO = Path(__file__).resolve().parent.parent
HEALTHY_TIMEOUT_SECS = 30.0
POLL_SECS = 0.02
SIGNAL_CODE = "def check_signal(symbol, ticker, klines):\n    return False\n"


def _create_user(conn: psycopg.Connection[Any]) -> tuple[uuid.UUID, str]:
    """A pro user with one active trader and a machine row; returns (user id, machine id)."""
    user_id = uuid.uuid4()
    conn.execute(
        "insert into auth.users (id, aud, role, email) values (%s, 'authenticated', 'authenticated', %s)",
        (user_id, f"bench-startup-{user_id.hex[:12]}@example.com"),
    )
    conn.execute("update public.users set tier = 'pro' where id = %s", (user_id,))
    conn.execute(
        "insert into public.traders (user_id, name, signal_code, ai_instructions, timeframes,"
        " check_interval, reanalysis_interval, symbols) values (%s, 'bench start-up', %s, 'Be careful.',"
        " array['1m', '1h'], '1m_close', '5m', array['BTCUSDT', 'ETHUSDT'])",
        (user_id, SIGNAL_CODE),
    )
    machine_id = f"bench-{uuid.uuid4().hex[:12]}"
    conn.execute(
        "insert into public.fly_machines (user_id, machine_id, status) values (%s, %s, 'starting')",
        (user_id, machine_id),
    )
    return user_id, machine_id


def _run_queue_wait_secs(pid: int) -> float:
    """Seconds `pid`'s threads were runnable but waiting for their core (/proc/<pid>/task/*/schedstat)."""
    waited_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        waited_ns += int((task / "schedstat").read_text().split()[1])
    return waited_ns / 1e9


def _start_once(
    stack: DevStack,
    user_id: uuid.UUID,
    machine_id: str,
    tree: Path,
    client: httpx.Client,
    *,
    extra_env: dict[str, str],
) -> tuple[float, float, float]:
    """Start `tree`'s worker pinned to one core, wait for /health 200, kill it; (startupSecs, startupCpuSecs,
    seconds it waited for its core by then). The poll is one long-lived client every POLL_SECS: a new httpx
    client per poll loads the CA bundle each time, CPU the worker starting beside it would be short of."""
    port = free_port()
    env = (
        worker_environment(stack, user_id, machine_id, port, f"http://127.0.0.1:{EXCHANGE_PORT}") | extra_env
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "worker"], cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    pin_to_cpus(process.pid, 1)  # as the Fly stand-in runs a one-CPU machine
    try:
        deadline = time.monotonic() + HEALTHY_TIMEOUT_SECS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise RuntimeError(f"the worker in {tree} exited {process.returncode}: {stderr[-500:]}")
            try:
                health = client.get(f"http://127.0.0.1:{port}/health")
            except httpx.TransportError:
                time.sleep(POLL_SECS)
                continue
            if health.status_code == 200:
                waited_secs = _run_queue_wait_secs(process.pid)
                body = health.json()
                return float(body["startupSecs"]), float(body["startupCpuSecs"]), waited_secs
            time.sleep(POLL_SECS)
        raise RuntimeError(f"the worker in {tree} was not healthy within {HEALTHY_TIMEOUT_SECS:.0f}s")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def _figures(side: str, samples: list[tuple[float, float, float]], load: str) -> list[Measurement]:
    p50, p95 = median_and_p95([secs for secs, _, _ in samples])
    cpu_p50, cpu_p95 = median_and_p95([cpu for _, cpu, _ in samples])
    wait_p50, wait_p95 = median_and_p95([waited for _, _, waited in samples])
    return [
        Measurement(f"{side}start-up p50", p50, "s", f"{len(samples)} starts; load {load}"),
        Measurement(f"{side}start-up p95", p95, "s", f"max {max(secs for secs, _, _ in samples):.3f}s"),
        Measurement(f"{side}start-up CPU p50", cpu_p50, "s", f"p95 {cpu_p95:.3f}s"),
        # Runnable but another process had the core (to the first poll that saw 200: an upper bound).
        Measurement(f"{side}waiting for the core p50", wait_p50, "s", f"p95 {wait_p95:.3f}s"),
    ]


def run() -> list[Measurement]:
    rounds = int(os.environ.get("STARTUP_ROUNDS", "20"))
    baseline = os.environ.get("STARTUP_BASELINE")
    trees = {"": REPO} | ({"baseline ": Path(baseline).resolve()} if baseline else {})
    stack = DevStack()
    samples: dict[str, list[tuple[float, float, float]]] = {side: [] for side in trees}
    loads = [os.getloadavg()[0]]
    with (
        stack.postgres.connect(autocommit=True) as conn,
        httpx.Client(timeout=1) as client,
        tempfile.TemporaryDirectory(prefix="no-bytecode-") as empty_cache,
    ):
        extra_env = {}
        if os.environ.get("STARTUP_BYTECODE") == "none":
            # An empty cache to read from, and no writes: every start compiles every module again.
            extra_env = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": empty_cache}
        user_id, machine_id = _create_user(conn)
        try:
            for index in range(rounds):
                # Alternate which side goes first, so neither always follows the other's kill.
                order = list(trees.items()) if index % 2 == 0 else list(reversed(trees.items()))
                for side, tree in order:
                    samples[side].append(
                        _start_once(stack, user_id, machine_id, tree, client, extra_env=extra_env)
                    )
                loads.append(os.getloadavg()[0])
        finally:
            conn.execute("delete from auth.users where id = %s", (user_id,))
    load = f"{min(loads):.1f}-{max(loads):.1f}"
    results = [figure for side in trees for figure in _figures(side, samples[side], load)]
    if baseline:
        ours, theirs = (statistics.median(secs for secs, _, _ in samples[side]) for side in trees)
        results.append(Measurement("start-up p50 / baseline's", ours / theirs, "x", str(baseline)))
    return results
