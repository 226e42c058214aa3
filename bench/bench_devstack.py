"""How fast the local stack starts (cold and warm) and answers through the gateway.

Stops a running default stack first (ports are fixed) and brings it back afterwards. Cold means a new
state folder (initdb, bootstrap, migrations, seed); warm means an existing cluster with nothing running.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.measurement import Measurement, median_and_p95
from devstack.config import StackConfig
from devstack.keys import mint_jwt
from devstack.stack import DevStack

ROUNDS = 3
REQUESTS = 300
DEMO_USER_ID = "00000000-0000-4000-8000-000000000001"


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _request_latencies_ms(
    client: httpx.Client, method: str, path: str, headers: dict[str, str]
) -> list[float]:
    for _ in range(20):  # warm connections and PostgREST's schema cache
        client.request(method, path, headers=headers).raise_for_status()
    samples = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        client.request(method, path, headers=headers).raise_for_status()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def run() -> list[Measurement]:
    default_stack = DevStack()
    was_up = default_stack.is_up()
    default_stack.down()
    cold, warm, down = [], [], []
    results: list[Measurement] = []
    try:
        for _ in range(ROUNDS):
            with tempfile.TemporaryDirectory(prefix="trademind-bench-") as state_dir:
                os.environ["TRADEMIND_DEVSTACK_DIR"] = state_dir
                stack = DevStack(StackConfig.load())
                Path(state_dir).chmod(0o755)
                try:
                    cold.append(_timed(stack.up))
                    down.append(_timed(stack.down))
                    warm.append(_timed(stack.up))
                finally:
                    stack.destroy()
                    del os.environ["TRADEMIND_DEVSTACK_DIR"]
        default_stack.up()
        config = default_stack.config
        user_headers = {
            "apikey": config.anon_key,
            "Authorization": f"Bearer {mint_jwt('authenticated', DEMO_USER_ID)}",
        }
        with httpx.Client(base_url=config.api_url, timeout=10) as client:
            rest = _request_latencies_ms(client, "GET", "/rest/v1/traders?select=id,name", user_headers)
            function = _request_latencies_ms(client, "POST", "/functions/v1/ping", user_headers)
        rest_median, rest_p95 = median_and_p95(rest)
        function_median, function_p95 = median_and_p95(function)
        results = [
            Measurement("dev up, cold (new cluster)", sorted(cold)[ROUNDS // 2], "s", f"median of {ROUNDS}"),
            Measurement(
                "dev up, warm (cluster exists)", sorted(warm)[ROUNDS // 2], "s", f"median of {ROUNDS}"
            ),
            Measurement("dev down", sorted(down)[ROUNDS // 2], "s", f"median of {ROUNDS}"),
            Measurement("GET /rest/v1/traders as a user", rest_median, "ms", f"median of {REQUESTS}"),
            Measurement("GET /rest/v1/traders as a user", rest_p95, "ms", f"p95 of {REQUESTS}"),
            Measurement("POST /functions/v1/ping", function_median, "ms", f"median of {REQUESTS}"),
            Measurement("POST /functions/v1/ping", function_p95, "ms", f"p95 of {REQUESTS}"),
        ]
    finally:
        if not was_up:
            default_stack.down()
    return results
