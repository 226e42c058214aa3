"""The demo's market: the stack's exchange simulator replaying from a known start at the demo's speed.

The demo restarts only the stack's `exchange` part (same name, port and log, so `trademind dev status` and
`dev down` still see it) with `--start`/`--speed`/`--paused`; the worker the demo provisions is pointed at
that port already (devstack/config.py WORKER_BINANCE_BASE_URL), so nothing else changes. The clock stays
paused until the worker is up and subscribed, so the demo's market time starts where it says it does.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from devstack.config import EXCHANGE_PORT
from devstack.stack import DevStack

EXCHANGE_URL = f"http://127.0.0.1:{EXCHANGE_PORT}"
START_TIMEOUT_SECS = 30.0


class MarketError(Exception):
    """The exchange simulator did not do what the demo asked."""


@dataclass(frozen=True, slots=True)
class Timeline:
    """Maps wall time to market time: the market ran at `speed` from `market_ms` at `wall` (then paused)."""

    wall: datetime
    market_ms: int
    speed: float
    end_market_ms: int | None = None

    def market_ms_at(self, wall: datetime) -> int:
        market_ms = self.market_ms + int((wall - self.wall).total_seconds() * 1000 * self.speed)
        market_ms = max(market_ms, self.market_ms)
        return min(market_ms, self.end_market_ms) if self.end_market_ms is not None else market_ms


def parse_start_ms(text: str) -> int:
    """Unix ms, or an ISO time with its zone (e.g. 2025-01-06T00:00:00Z)."""
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"give the start with a time zone, e.g. 2025-01-06T00:00:00Z (was {text!r})")
    return int(moment.timestamp() * 1000)


def format_market_ms(market_ms: int) -> str:
    return datetime.fromtimestamp(market_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


class DemoMarket:
    """Restart the stack's exchange for the demo, control its clock, and put the stack's own back after."""

    def __init__(self, stack: DevStack) -> None:
        self._stack = stack
        self._http = httpx.Client(base_url=EXCHANGE_URL, timeout=10.0)

    def close(self) -> None:
        self._http.close()

    def restart(self, *, start_ms: int, speed: float) -> dict[str, Any]:
        """Replace the running exchange with one paused at `start_ms`, to run at `speed` once resumed."""
        registry = self._stack.registry
        registry.stop("exchange", first_signal=signal.SIGTERM)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(self._stack.config.repo_root),
        }
        if klines_dir := os.environ.get("TRADEMIND_KLINES_DIR"):
            env["TRADEMIND_KLINES_DIR"] = klines_dir
        argv = [
            sys.executable, "-m", "devstack.exchange", "--port", str(EXCHANGE_PORT),
            "--speed", f"{speed:g}", "--start", str(start_ms), "--paused",
        ]  # fmt: skip
        log_path = self._stack.config.logs_dir / "exchange.log"
        registry.spawn("exchange", argv, log_path=log_path, port=EXCHANGE_PORT, env=env)
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while True:
            if registry.live("exchange") is None:
                raise MarketError(f"the exchange simulator exited at start; see {log_path}")
            try:
                state = self.state()
            except (httpx.TransportError, MarketError):
                state = None
            if state is not None:
                if int(state["market_time_ms"]) != start_ms:
                    raise MarketError(
                        f"the exchange started at {format_market_ms(int(state['market_time_ms']))}, not "
                        f"{format_market_ms(start_ms)} (outside the recordings?)"
                    )
                return state
            if time.monotonic() > deadline:
                raise MarketError(f"the exchange simulator did not answer within {START_TIMEOUT_SECS:.0f}s")
            time.sleep(0.1)

    def restore(self) -> None:
        """Put the stack's own exchange back (default start and speed), as `trademind dev up` starts it."""
        self._stack.registry.stop("exchange", first_signal=signal.SIGTERM)
        self._stack.up()

    def state(self) -> dict[str, Any]:
        response = self._http.get("/_sim/state")
        if response.status_code != 200:
            raise MarketError(f"/_sim/state answered {response.status_code}")
        body: dict[str, Any] = response.json()
        return body

    def set_clock(self, **changes: Any) -> dict[str, Any]:
        response = self._http.post("/_sim/clock", json=changes)
        if response.status_code != 200:
            raise MarketError(f"/_sim/clock {changes} answered {response.status_code}: {response.text[:200]}")
        body: dict[str, Any] = response.json()
        return body

    def resume(self) -> Timeline:
        """Start the market clock; the timeline maps wall times (a trade's executed_at) to market time."""
        before = datetime.now(UTC)
        state = self.set_clock(paused=False)
        after = datetime.now(UTC)
        return Timeline(before + (after - before) / 2, int(state["market_time_ms"]), float(state["speed"]))

    def pause(self, timeline: Timeline) -> Timeline:
        """Stop the market clock; the returned timeline ends where the market stopped."""
        state = self.set_clock(paused=True)
        return Timeline(timeline.wall, timeline.market_ms, timeline.speed, int(state["market_time_ms"]))

    def klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> list[tuple[int, float]]:
        """(close time ms, close price) of the candles in [start_ms, end_ms], paging 1000 at a time."""
        closes: list[tuple[int, float]] = []
        cursor = start_ms
        while cursor < end_ms:
            params: dict[str, str | int] = {
                "symbol": symbol, "interval": interval, "startTime": cursor, "endTime": end_ms, "limit": 1000,
            }  # fmt: skip
            response = self._http.get("/api/v3/klines", params=params)
            if response.status_code != 200:
                raise MarketError(f"klines {symbol} {interval} answered {response.status_code}")
            rows = response.json()
            if not rows:
                break
            closes += [(int(row[6]), float(row[4])) for row in rows]
            cursor = int(rows[-1][6]) + 1
        return closes

    def last_prices(self, symbols: list[str]) -> dict[str, float]:
        prices = {}
        for symbol in symbols:
            response = self._http.get("/api/v3/ticker/price", params={"symbol": symbol})
            if response.status_code == 200:
                prices[symbol] = float(response.json()["price"])
        return prices
