"""`python -m devstack.exchange` as its own process, as the stack runs it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx

from devstack.config import REPO_ROOT
from devstack.exchange.__main__ import parse_args
from tests.devstack.exchange.conftest import START_MS


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_module_serves_the_replay_from_the_given_start_and_stops_on_sigterm() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.exchange", "--port", str(port), "--speed", "60",
         "--start", "2025-01-03T03:00:00Z", "--symbols", "ETHUSDT"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:
            while True:
                try:
                    server_time = client.get("/api/v3/time").json()["serverTime"]
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the simulator did not start"
                    time.sleep(0.1)
            info = client.get("/api/v3/exchangeInfo").json()
            unknown = client.get("/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1m"})
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    assert START_MS <= server_time < START_MS + 30 * 60_000
    assert [symbol["symbol"] for symbol in info["symbols"]] == ["ETHUSDT"]
    assert unknown.status_code == 400 and unknown.json() == {"code": -1121, "msg": "Invalid symbol."}
    assert process.returncode == 0, output


def test_missing_data_directory_is_a_clear_error(tmp_path: object) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devstack.exchange", "--port", "0", "--data-dir", f"{tmp_path}/none"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip

    assert result.returncode == 1
    assert "no kline recordings at" in result.stderr and "TRADEMIND_KLINES_DIR" in result.stderr


def test_push_secs_sets_both_stream_paces_and_defaults_to_binances() -> None:
    stepped, default = parse_args(["--paused", "--push-secs", "0.1"]), parse_args([])

    assert (stepped.kline_push_secs, stepped.ticker_push_secs, stepped.paused) == (0.1, 0.1, True)
    assert (default.kline_push_secs, default.ticker_push_secs) == (0.5, 1.0)
