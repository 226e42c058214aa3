"""A real worker's memory at 20 traders x 100 symbols x 3 timeframes x 1000 candles, every process counted.

`python -m worker` runs against the local stack and an exchange simulator replaying 100 symbols (the
recorded BTCUSDT candles under 100 names). 20 active traders follow all 100 symbols on 1m, 5m and 1h
and check every 1m close with helper strategies that compute their indicators and never signal. Once
every trader has run full sweeps (all 100 symbols fresh), /proc is read for the worker and every process
it started: RSS summed (the issue 16 target, <= 180 MB), and PSS (shared pages split between the processes
that map them) plus the snapshot segments in /dev/shm, which is what the machine actually holds.
The worker sizes its sandbox pool by the CPUs it may use: `taskset -c 0 python -m bench bench_worker_memory`
measures it as on the Pro tier's one-CPU machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.bench_lifecycle import worker_environment
from bench.bench_sandbox import HELPER_TEMPLATES
from bench.measurement import Measurement
from devstack.fly.machines import free_port
from devstack.stack import DevStack

TRADERS = 20
SYMBOLS = [f"M{index:03d}USDT" for index in range(100)]
TIMEFRAMES = ["1m", "5m", "1h"]
MARKET_START = "2025-01-06T00:00:00Z"  # five days into the 1m/5m recordings: 1000 candles of each
SWEEPS = 5  # full sweeps per trader before measuring
TARGET_MB = 180.0
SETTLE_TIMEOUT_SECS = 240.0
SHM = Path("/dev/shm")  # noqa: S108 (where the worker's snapshot segments live, not a temp file)

NEEDS_STACK = True  # python -m bench starts the local stack for it

# An exchange simulator with every symbol replaying the BTCUSDT recordings (one copy of the arrays):
# `python -c SIMULATOR <port> <market start> <symbols,...> <speed>` prints "ready" once it serves.
SIMULATOR = """
import asyncio, sys
from dataclasses import replace
from devstack.exchange.__main__ import _start_ms
from devstack.exchange.data import default_data_dir
from worker.market.recordings import load_directory
from devstack.exchange.server import ExchangeSimulator, SimulatorConfig

port, start, speed = int(sys.argv[1]), _start_ms(sys.argv[2]), float(sys.argv[4])
symbols = sys.argv[3].split(",")
btc = load_directory(default_data_dir(), {"BTCUSDT"})["BTCUSDT"]
data = {symbol: replace(btc, symbol=symbol) for symbol in symbols}
async def main():
    simulator = ExchangeSimulator(SimulatorConfig(port=port, start_ms=start, speed=speed), data)
    await simulator.start()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def signal_code(index: int) -> str:
    """A helper strategy of bench_sandbox that computes its indicators but never signals."""
    logic = HELPER_TEMPLATES[index % len(HELPER_TEMPLATES)].format(p=(14, 21, 9)[index % 3], lo=30)
    logic = logic.replace(
        "get_latest_volumes_spike(k)", "get_volumes(k)[-1] > 2.0 * get_latest_volume_ma(k, 20)"
    )
    logic = logic.replace("klines['4h']", "klines['5m']").replace("klines['15m']", "klines['1m']")
    lines = logic.split("\n")
    lines[-1] = lines[-1].replace("return ", "found = ")
    body = "\n".join(lines)
    head = "def check_signal(symbol, ticker, klines):\n    k = klines['1h']\n"
    return f"{head}    {body}\n    return found and False\n"


@contextmanager
def _process(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def _pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _unmapped_segments_kb(pid: int, mapped_by: list[int]) -> int:
    """The worker's snapshot segments that no process maps (their pages are held all the same)."""
    mapped = set()
    for process in mapped_by:
        for line in Path(f"/proc/{process}/maps").read_text().splitlines():
            if f" {SHM}/" in line:
                mapped.add(line.rsplit("/", 1)[1].split()[0])
    segments = [path for path in SHM.glob(f"trademind-klines-{pid}-*") if path.name not in mapped]
    return sum(path.stat().st_blocks * 512 for path in segments) // 1024


def _wait_for_sweeps(port: int, process: subprocess.Popen[str]) -> dict[str, Any]:
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECS
    figures: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited with {process.returncode}")
        try:
            figures = httpx.get(f"http://127.0.0.1:{port}/metrics/traders", timeout=2).json()["traders"]
        except (httpx.TransportError, ValueError, KeyError):
            figures = {}
        full = [f for f in figures.values() if f["checks"] >= SWEEPS * len(SYMBOLS) and f["errors"] == 0]
        if len(full) == TRADERS:
            return figures
        time.sleep(1.0)
    raise RuntimeError(f"the traders did not complete {SWEEPS} full sweeps in time: {figures}")


def _measure(stack: DevStack, conn: psycopg.Connection[Any]) -> list[Measurement]:
    user_id = uuid.uuid4()
    conn.execute(
        "insert into auth.users (id, aud, role, email) values (%s, 'authenticated', 'authenticated', %s)",
        (user_id, f"bench-{user_id.hex[:12]}@example.com"),
    )
    conn.execute("update public.users set tier = 'pro' where id = %s", (user_id,))
    for index in range(TRADERS):
        conn.execute(
            "insert into public.traders (user_id, name, signal_code, ai_instructions, timeframes,"
            " check_interval, reanalysis_interval, symbols)"
            " values (%s, %s, %s, '-', %s, '1m_close', '1h', %s)",
            (user_id, f"memory bench {index}", signal_code(index), TIMEFRAMES, SYMBOLS),
        )
    machine_id = f"bench-{uuid.uuid4().hex[:12]}"
    conn.execute(
        "insert into public.fly_machines (user_id, machine_id, status) values (%s, %s, 'starting')",
        (user_id, machine_id),
    )
    exchange_port, http_port = free_port(), free_port()
    env = worker_environment(stack, user_id, machine_id, http_port, f"http://127.0.0.1:{exchange_port}")
    env["DEFAULT_SYMBOLS"] = SYMBOLS[0]
    simulator_args = [
        sys.executable, "-c", SIMULATOR, str(exchange_port), MARKET_START, ",".join(SYMBOLS), "30"
    ]  # fmt: skip
    try:
        with _process(simulator_args) as simulator:
            assert simulator.stdout is not None
            if simulator.stdout.readline().strip() != "ready":
                raise RuntimeError("the exchange simulator did not start")
            with _process([sys.executable, "-m", "worker"], env) as worker:
                figures = _wait_for_sweeps(http_port, worker)
                processes = [worker.pid, *_descendants(worker.pid)]
                rss_kb = {pid: _status_kb(pid, "VmRSS") for pid in processes}
                pss_kb = sum(_pss_kb(pid) for pid in processes)
                unmapped_kb = _unmapped_segments_kb(worker.pid, processes)
                peak_kb = _status_kb(worker.pid, "VmHWM")
    finally:
        conn.execute("delete from auth.users where id = %s", (user_id,))
    children = [pid for pid in processes if pid != worker.pid]
    total_mb = sum(rss_kb.values()) / 1024
    sweep_ms = sorted(f["lastRunDurationMs"] or 0 for f in figures.values())
    return [
        Measurement(
            "worker + every child process RSS", total_mb, "MB",
            f"{TRADERS} x {len(SYMBOLS)} x {len(TIMEFRAMES)} x 1000, {len(os.sched_getaffinity(0))} CPU;"
            f" target <= {TARGET_MB:.0f} MB",
        ),
        Measurement("worker process RSS", rss_kb[worker.pid] / 1024, "MB", f"peak {peak_kb / 1024:.1f} MB"),
        Measurement(
            "child processes RSS", sum(rss_kb[pid] for pid in children) / 1024, "MB",
            f"{len(children)} processes: " + ", ".join(f"{rss_kb[pid] / 1024:.1f}" for pid in children),
        ),
        Measurement(
            "PSS of all + unmapped snapshot segments", (pss_kb + unmapped_kb) / 1024, "MB",
            f"what the machine holds: shared pages counted once; segments {unmapped_kb / 1024:.1f} MB",
        ),
        Measurement("a trader's last run", sweep_ms[len(sweep_ms) // 2], "ms", "median over traders"),
    ]  # fmt: skip


def run() -> list[Measurement]:
    stack = DevStack()
    stack.up()
    with stack.postgres.connect(autocommit=True) as conn:
        return _measure(stack, conn)
