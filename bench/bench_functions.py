"""AI Edge Functions via the gateway, Gemini stand-in: latency (p50/p99) and analyze-signal throughput.

Works on a throwaway 'power'-tier user (removed afterwards) whose subscription is cancelled, so
generate-strategy never starts a worker machine.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.measurement import Measurement
from devstack.keys import mint_jwt
from devstack.stack import DevStack

NEEDS_STACK = True  # python -m bench starts the local stack for it

STRATEGY_REQUESTS = 40
ANALYSIS_REQUESTS = 200
THROUGHPUT_CALLS = 600
CONCURRENCY = 32
HOUR_MS = 3_600_000
END_MS = 1_704_067_200_000


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _market_data() -> dict[str, Any]:
    """200 1h and 100 4h candles (Binance's layout) and indicators: a typical worker request (about 60 kB)."""
    klines: dict[str, list[list[Any]]] = {}
    for timeframe, step_ms, count in (("1h", HOUR_MS, 200), ("4h", 4 * HOUR_MS, 100)):
        rows = []
        for i in range(count):
            open_time = END_MS - (count - i) * step_ms
            price = 42000 + 15 * i
            prices = [f"{price:.2f}", f"{price + 60:.2f}", f"{price - 60:.2f}", f"{price + 15:.2f}"]
            rows.append(
                [open_time, *prices, "12.5", open_time + step_ms - 1, "531250.0", 140, "6.1", "259250.0", "0"]
            )
        klines[timeframe] = rows
    return {
        "symbol": "BTCUSDT",
        "timestamp": END_MS // 1000,
        "ticker": {"lastPrice": "45000.00", "volume24h": "25000.5", "priceChange24h": "1.5"},
        "klines": klines,
        "indicators": {"rsi_1h": 28.5, "macd_4h": {"macd": 150.2, "signal": 120.5, "histogram": 29.7}},
    }


class _Fixture:
    """The bench user, its trader, signal and machine, written straight to Postgres."""

    def __init__(self, stack: DevStack) -> None:
        self.stack = stack
        self.user_id = uuid.uuid4()
        self.trader_id = uuid.uuid4()
        self.signal_id = uuid.uuid4()
        self.machine_id = f"bench-{self.user_id.hex[:12]}"

    def __enter__(self) -> _Fixture:
        with self.stack.postgres.connect(autocommit=True) as db:
            db.execute(
                "insert into auth.users (id, aud, role, email)"
                " values (%s, 'authenticated', 'authenticated', %s)",
                (self.user_id, f"bench-{self.user_id}@example.com"),
            )
            db.execute(
                "update public.users set tier = 'power', subscription_status = 'cancelled' where id = %s",
                (self.user_id,),
            )
            db.execute(
                "insert into public.traders (id, user_id, name, signal_code, ai_instructions, timeframes,"
                " check_interval, reanalysis_interval, symbols) values (%s, %s, 'bench',"
                " 'def check_signal(symbol, ticker, klines):\n    return False\n', 'Buy dips.',"
                " array['1h', '4h'], '1h_close', '1h', array['BTCUSDT'])",
                (self.trader_id, self.user_id),
            )
            db.execute(
                "insert into public.signals (id, trader_id, user_id, symbol, trigger_price)"
                " values (%s, %s, %s, 'BTCUSDT', 45000)",
                (self.signal_id, self.trader_id, self.user_id),
            )
            db.execute(
                "insert into public.fly_machines (user_id, machine_id, status) values (%s, %s, 'running')",
                (self.user_id, self.machine_id),
            )
        return self

    def reset_usage(self) -> None:
        with self.stack.postgres.connect(autocommit=True) as db:
            db.execute("delete from public.ai_usage_daily where user_id = %s", (self.user_id,))

    def __exit__(self, *_: object) -> None:
        with self.stack.postgres.connect(autocommit=True) as db:
            db.execute("delete from auth.users where id = %s", (self.user_id,))


def _latencies_ms(client: httpx.Client, path: str, body: dict[str, Any], jwt: str, count: int) -> list[float]:
    headers = {"Authorization": f"Bearer {jwt}"}
    for _ in range(5):  # warm the router's module cache and the connections
        client.post(path, json=body, headers=headers).raise_for_status()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        client.post(path, json=body, headers=headers).raise_for_status()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def _throughput(url: str, body: dict[str, Any], jwt: str) -> tuple[float, int]:
    """Calls per second with CONCURRENCY callers until THROUGHPUT_CALLS are done; also the failures."""
    remaining = THROUGHPUT_CALLS
    failures = 0
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def caller() -> None:
            nonlocal remaining, failures
            while remaining > 0:
                remaining -= 1
                response = await client.post(url, json=body, headers={"Authorization": f"Bearer {jwt}"})
                failures += response.status_code != 200

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(CONCURRENCY):
                group.create_task(caller())
        elapsed = time.perf_counter() - started
    return THROUGHPUT_CALLS / elapsed, failures


def _cpu_secs(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run() -> list[Measurement]:
    stack = DevStack()
    functions_url = f"{stack.config.api_url}/functions/v1"
    with _Fixture(stack) as fixture, httpx.Client(base_url=functions_url, timeout=60) as client:
        user_jwt = mint_jwt("authenticated", fixture.user_id)
        machine_jwt = mint_jwt(
            "trader_machine", fixture.user_id, extra_claims={"machine_id": fixture.machine_id}
        )
        analysis = {
            "traderId": str(fixture.trader_id),
            "signalId": str(fixture.signal_id),
            "marketData": _market_data(),
        }
        strategy = {"description": "Buy BTC on the 1h chart when RSI drops below 30 and volume spikes 2x"}

        strategy_ms = _latencies_ms(client, "/generate-strategy", strategy, user_jwt, STRATEGY_REQUESTS)
        analysis_ms = _latencies_ms(client, "/analyze-signal", analysis, machine_jwt, ANALYSIS_REQUESTS)
        fixture.reset_usage()
        pids = {name: record.pid for name in ("functions", "gemini") if (record := stack.registry.live(name))}
        cpu_before = {name: _cpu_secs(pid) for name, pid in pids.items()}
        throughput_url = f"{functions_url}/analyze-signal"
        calls_per_sec, failures = asyncio.run(_throughput(throughput_url, analysis, machine_jwt))
        cpu_ms_per_call = {
            name: (_cpu_secs(pid) - cpu_before[name]) * 1000 / THROUGHPUT_CALLS for name, pid in pids.items()
        }
    detail = "through the gateway, Gemini stand-in"
    concurrent = f"{CONCURRENCY} concurrent callers, {THROUGHPUT_CALLS} calls, {failures} failed"
    return [
        Measurement("generate-strategy p50", statistics.median(strategy_ms), "ms", detail),
        Measurement(
            "generate-strategy p99", _percentile(strategy_ms, 0.99), "ms", f"{STRATEGY_REQUESTS} in a row"
        ),
        Measurement("analyze-signal p50", statistics.median(analysis_ms), "ms", detail),
        Measurement(
            "analyze-signal p99", _percentile(analysis_ms, 0.99), "ms", f"{ANALYSIS_REQUESTS} in a row"
        ),
        Measurement("analyze-signal throughput", calls_per_sec, "calls/s", f"one Deno process, {concurrent}"),
        *(
            Measurement(f"{name} CPU per analyze-signal", cpu_ms, "ms", f"process CPU time / calls ({name})")
            for name, cpu_ms in cpu_ms_per_call.items()
        ),
    ]
