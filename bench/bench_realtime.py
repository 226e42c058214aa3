"""Realtime stand-in: commit-to-callback latency at 100 changes/s to 50 subscribers; server CPU and RSS.

Runs its own server (own port and slot) so the figures are its alone. Each subscriber is a separate
session with its own JWT (a machine token with its own machine_id), so every change is RLS-checked once
per subscriber, as 50 worker machines of one user would cost. Latency is from the writer's commit
returning to the subscriber's socket handing over the frame, on this machine's monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from websockets.asyncio.client import ClientConnection, connect

from bench.measurement import Measurement
from devstack.config import StackConfig
from devstack.keys import ANON_KEY, mint_jwt

NEEDS_STACK = True  # python -m bench starts the local stack for it

SUBSCRIBERS = 50
CHANGES_PER_SEC = 100
WARMUP_SECS = 3.0
MEASURE_SECS = 20.0
TRADERS = 10
_TICKS_PER_SEC = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _process_tree(pid: int) -> list[int]:
    """The server and its children (pg_recvlogical)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:
                    children.append(int(entry.name))
    return [pid, *children]


def _cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def _rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_BYTES
    return total / 2**20


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def _subscriber(
    url: str,
    user_id: uuid.UUID,
    index: int,
    committed: dict[int, float],
    latencies_ms: list[float],
    *,
    readers: list[asyncio.Task[None]],
) -> ClientConnection:
    socket_ = await connect(url, max_size=None)
    token = mint_jwt("trader_machine", user_id, extra_claims={"machine_id": f"bench-{index}"})
    binding = {"event": "UPDATE", "schema": "public", "table": "traders", "filter": f"user_id=eq.{user_id}"}
    join = {"config": {"postgres_changes": [binding]}, "access_token": token}
    await socket_.send(
        json.dumps({"topic": f"realtime:bench-{index}", "event": "phx_join", "payload": join, "ref": "1"})
    )
    while json.loads(await asyncio.wait_for(socket_.recv(), 10))["event"] != "system":
        pass

    async def read() -> None:
        async for raw in socket_:
            received = time.monotonic()
            frame = json.loads(raw)
            if frame["event"] == "postgres_changes":
                sequence = int(frame["payload"]["data"]["record"]["name"].removeprefix("bench "))
                if sequence in committed:
                    latencies_ms.append((received - committed[sequence]) * 1000)

    readers.append(asyncio.create_task(read(), name=f"bench-reader-{index}"))
    return socket_


async def _measure(
    config: StackConfig, port: int, server_pid: int, *, synchronous_commit: bool
) -> list[Measurement]:
    user_id = uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(config.db_url, autocommit=True) as db:
        # The dev cluster commits synchronously, as hosted Supabase does; async commit (WAL flushed by the WAL
        # writer every 200 ms, and logical decoding reads only flushed WAL) is measured for comparison.
        await db.execute(f"set synchronous_commit = {'on' if synchronous_commit else 'off'}")
        await db.execute(
            "insert into auth.users (id, aud, role, email) values (%s, 'authenticated', 'authenticated', %s)",
            (user_id, f"bench-{user_id.hex[:8]}@example.com"),
        )
        try:
            traders = []
            for number in range(TRADERS):
                row = await (
                    await db.execute(
                        "insert into public.traders (user_id, name, signal_code, ai_instructions, timeframes,"
                        " check_interval, reanalysis_interval) values (%s, %s, 'def check_signal(s, t, k):"
                        " return False', 'x', array['1m'], '1m_close', '5m') returning id",
                        (user_id, f"bench -{number}"),
                    )
                ).fetchone()
                assert row is not None
                traders.append(row[0])
            committed: dict[int, float] = {}
            latencies_ms: list[float] = []
            url = f"ws://127.0.0.1:{port}/socket/websocket?apikey={ANON_KEY}&vsn=1.0.0"
            readers: list[asyncio.Task[None]] = []
            sockets = [
                await _subscriber(url, user_id, i, committed, latencies_ms, readers=readers)
                for i in range(SUBSCRIBERS)
            ]
            pids = _process_tree(server_pid)
            interval = 1 / CHANGES_PER_SEC
            total = int((WARMUP_SECS + MEASURE_SECS) * CHANGES_PER_SEC)
            warmup = int(WARMUP_SECS * CHANGES_PER_SEC)
            started = time.monotonic()
            cpu_before = wall_before = 0.0
            for sequence in range(total):
                if sequence == warmup:
                    latencies_ms.clear()
                    cpu_before, wall_before = _cpu_ticks(pids), time.monotonic()
                await asyncio.sleep(max(0.0, started + sequence * interval - time.monotonic()))
                await db.execute(
                    "update public.traders set name = %s where id = %s",
                    (f"bench {sequence}", traders[sequence % TRADERS]),
                )
                if sequence >= warmup:
                    committed[sequence] = time.monotonic()
            await asyncio.sleep(2.0)  # let the last changes arrive
            cpu_secs = (_cpu_ticks(pids) - cpu_before) / _TICKS_PER_SEC
            wall_secs = time.monotonic() - wall_before
            rss = _rss_mb(pids)
            for socket_ in sockets:
                await socket_.close()
            await asyncio.gather(*readers, return_exceptions=True)
        finally:
            await db.execute("delete from auth.users where id = %s", (user_id,))
    expected = (total - warmup) * SUBSCRIBERS
    commit = "synchronous commit (dev default)" if synchronous_commit else "async commit"
    detail = f"{CHANGES_PER_SEC}/s x {SUBSCRIBERS} subscribers, {MEASURE_SECS:.0f}s, {commit}"
    return [
        Measurement("commit-to-callback latency", _percentile(latencies_ms, 0.5), "ms", f"p50, {detail}"),
        Measurement("commit-to-callback latency", _percentile(latencies_ms, 0.99), "ms", f"p99, {detail}"),
        Measurement(
            "deliveries received", len(latencies_ms) / expected * 100, "%", f"of {expected}, {commit}"
        ),
        Measurement("server CPU (incl. pg_recvlogical)", cpu_secs / wall_secs * 100, "% of a core", detail),
        Measurement("server RSS (incl. pg_recvlogical)", rss, "MiB", f"after the run, {commit}"),
    ]


def run() -> list[Measurement]:
    config = StackConfig.load()
    port = _free_port()
    log_path = config.logs_dir / f"bench-realtime-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "devstack.realtime", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "REALTIME_LOG_LEVEL": "WARNING"},
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"the benchmark's Realtime server did not start; see {log_path}")
            time.sleep(0.1)
        return [
            *asyncio.run(_measure(config, port, server.pid, synchronous_commit=True)),
            *asyncio.run(_measure(config, port, server.pid, synchronous_commit=False)),
        ]
    finally:
        server.terminate()
        server.wait(timeout=30)
