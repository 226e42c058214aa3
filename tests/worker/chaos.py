"""Chaos run: a real worker machine trading a replayed market is SIGKILLed again and again while the exchange
drops streams and rejects requests and Gemini answers with error bursts; then Postgres is checked.

The machine is the product's own: a user signed up through Auth, generate-strategy's trader, the machine
of provision-machine on the Fly stand-in (a real `python -m worker`, restarted by its restart policy as
flyd does). Each kill is timed: kill -> healthy as the caller sees it through Fly's edge, and the worker's
own start-up (process start -> /health answering, `startupSecs`), which leaves out the platform's part.

`make chaos` runs it long (CHAOS_KILLS, CHAOS_MARKET_HOURS, CHAOS_SPEED); `make test` runs a short case. The
machine's restart policy is the product's (on-failure, 10 retries): kills are paced to at most 10 within any
5 minutes, beyond which Fly, by design, leaves a crash-looping machine failed.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import statistics
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg

from cli.demo import DEFAULT_DESCRIPTION, DEFAULT_START, _set_risk
from cli.demo_frontend import Frontend, sign_up
from cli.demo_market import DemoMarket, parse_start_ms
from cli.demo_summary import check_positions
from devstack.config import EXCHANGE_PORT, GEMINI_PORT, GEMINI_STANDIN_API_KEY
from devstack.fly.client import FlyStandInClient
from devstack.stack import DevStack

HEALTHY_TIMEOUT_SECS = 60.0
# Fly restarts an on-failure machine at most max_retries times within 5 minutes (restart-policy doc), then
# leaves it failed, as it should a crash loop: the kills keep within that, as any real crash rate must.
RESTART_WINDOW_SECS = 300.0
# How long the market may run past its end for the check to have an open and a closed position.
EXTRA_RUN_SECS = 180.0
HEALTH_POLL_SECS = 0.02
# A signal still `new` this long after it was written was dropped, not in flight.
STUCK_SIGNAL_SECS = 60
GEMINI_FAULTS = ("server_error", "rate_limit", "unavailable", "malformed_json", "schema_violation")
# What a credential looks like in a log line whatever its value: a JWT, or an HMAC credential assignment.
JWT = re.compile(r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]+")
SECRET_ENV = re.compile(r"TOKEN|SECRET|CREDENTIAL|PASSWORD|BINANCE_API")


class ChaosFailure(AssertionError):
    """The database, the exchange or the logs contradict what a crash-safe worker must leave."""


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    kills: int
    market_hours: float
    speed: float
    seed: int = 22
    start: str = DEFAULT_START


@dataclass(slots=True)
class Restart:
    kill_to_healthy_secs: float
    startup_secs: float  # the worker's own: process start -> /health answering
    startup_cpu_secs: float  # the CPU it used by then


@dataclass(slots=True)
class ChaosReport:
    user_id: str
    machine_id: str
    kills: int
    run_secs: float
    restarts: list[Restart] = field(default_factory=list)
    signals: int = 0
    filled_trades: int = 0
    closed_positions: int = 0
    open_positions_at_check: int = 0
    gemini_faults: int = 0
    exchange_faults: int = 0

    def figures(self) -> dict[str, Any]:
        startups = [r.startup_secs for r in self.restarts]
        cpu = [r.startup_cpu_secs for r in self.restarts]
        recoveries = [r.kill_to_healthy_secs for r in self.restarts]
        return {
            **{key: value for key, value in asdict(self).items() if key != "restarts"},
            "startup_p50_secs": percentile(startups, 50),
            "startup_p95_secs": percentile(startups, 95),
            "startup_max_secs": max(startups, default=None),
            "startup_cpu_p50_secs": percentile(cpu, 50),
            "startup_cpu_p95_secs": percentile(cpu, 95),
            "kill_to_healthy_p50_secs": percentile(recoveries, 50),
            "kill_to_healthy_p95_secs": percentile(recoveries, 95),
            "startups_secs": [round(s, 3) for s in startups],
        }


def percentile(values: list[float], p: int) -> float | None:
    """The p-th percentile (inclusive method); None without values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return round(statistics.quantiles(values, n=100, method="inclusive")[p - 1], 3)


class Machine:
    """The user's worker machine as Fly's API and edge show it."""

    def __init__(self, fly: FlyStandInClient, machine_id: str) -> None:
        self.fly, self.id = fly, machine_id
        self._killed_at: deque[float] = deque()

    def pid(self) -> int | None:
        pid = self.fly.process(self.id).get("pid")
        return int(pid) if pid else None

    def health(self) -> dict[str, Any] | None:
        try:
            response = self.fly.edge_http("/health", headers={"fly-force-instance-id": self.id}, timeout=2)
        except httpx.HTTPError:
            return None
        body: dict[str, Any] = response.json() if response.status_code == 200 else {}
        return body or None

    def wait_healthy(self, not_pid: int | None = None) -> dict[str, Any]:
        """/health 200 from a process other than `not_pid`."""
        deadline = time.monotonic() + HEALTHY_TIMEOUT_SECS
        while time.monotonic() < deadline:
            pid = self.pid()
            if pid is not None and pid != not_pid and (health := self.health()) is not None:
                return health
            time.sleep(HEALTH_POLL_SECS)
        raise ChaosFailure(f"machine {self.id} was not healthy {HEALTHY_TIMEOUT_SECS:.0f}s after a kill")

    def kill(self) -> Restart:
        self._keep_within_restart_policy()
        pid = self.pid()
        if pid is None:
            raise ChaosFailure(f"machine {self.id} has no process to kill")
        killed = time.monotonic()
        self._killed_at.append(killed)
        os.kill(pid, signal.SIGKILL)
        health = self.wait_healthy(not_pid=pid)
        recovered_secs = time.monotonic() - killed
        return Restart(recovered_secs, float(health["startupSecs"]), float(health["startupCpuSecs"]))

    def _keep_within_restart_policy(self) -> None:
        restart = self.fly.get(self.id)["config"].get("restart") or {}
        if restart.get("policy", "on-failure") != "on-failure":
            return
        max_retries = int(restart.get("max_retries") or 10)
        while True:
            now = time.monotonic()
            while self._killed_at and now - self._killed_at[0] > RESTART_WINDOW_SECS:
                self._killed_at.popleft()
            if len(self._killed_at) < max_retries:
                return
            time.sleep(self._killed_at[0] + RESTART_WINDOW_SECS - now + 0.5)

    def positions(self) -> list[dict[str, Any]]:
        response = self.fly.edge_http("/positions", headers={"fly-force-instance-id": self.id}, timeout=5)
        response.raise_for_status()
        body = response.json()
        return list(body["positions"] if isinstance(body, dict) else body)


class Faults:
    """Exchange and Gemini faults, switched on and off at random (seeded) between kills."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._exchange = httpx.Client(base_url=f"http://127.0.0.1:{EXCHANGE_PORT}", timeout=5)
        self._gemini = httpx.Client(base_url=f"http://127.0.0.1:{GEMINI_PORT}", timeout=5)
        self.exchange_count = 0
        self.gemini_count = 0

    def close(self) -> None:
        self.clear()
        self._exchange.close()
        self._gemini.close()

    def burst(self) -> None:
        choice = self._rng.choice(["drop", "reject", "stall", "none"])
        if choice == "drop":
            self._exchange.post("/_sim/drop").raise_for_status()
        elif choice == "reject":
            body = {"reject_status": 429, "reject_count": self._rng.randint(1, 4), "retry_after_secs": 1}
            self._exchange.post("/_sim/faults", json=body).raise_for_status()
        elif choice == "stall":
            self._exchange.post("/_sim/faults", json={"stall_streams": ["*"]}).raise_for_status()
        if choice != "none":
            self.exchange_count += 1
        faults = [{"kind": self._rng.choice(GEMINI_FAULTS)} for _ in range(self._rng.randint(1, 3))]
        self._gemini.post(
            "/_control/faults", json={"apiKey": GEMINI_STANDIN_API_KEY, "faults": faults}
        ).raise_for_status()
        self.gemini_count += len(faults)

    def calm(self) -> None:
        """Streams flow again (a stall lasts until the next kill at most)."""
        self._exchange.post("/_sim/faults", json={"stall_streams": []}).raise_for_status()

    def clear(self) -> None:
        self._exchange.post(
            "/_sim/faults", json={"stall_streams": [], "reject_status": None, "drop_every_secs": None}
        ).raise_for_status()
        self._gemini.delete("/_control/faults", params={"apiKey": GEMINI_STANDIN_API_KEY}).raise_for_status()


def run_chaos(stack: DevStack, db: psycopg.Connection[Any], options: ChaosOptions) -> ChaosReport:
    """Trade, kill, check; raises ChaosFailure naming the first broken rule."""
    rng = random.Random(options.seed)
    market = DemoMarket(stack)
    fly = FlyStandInClient()
    faults = Faults(rng)
    frontend: Frontend | None = None
    started = time.monotonic()
    try:
        start_ms = parse_start_ms(options.start)
        state = market.restart(start_ms=start_ms, speed=options.speed)
        end_ms = min(start_ms + int(options.market_hours * 3_600_000), int(state["end_ms"]))
        user = sign_up(stack)
        frontend = Frontend(stack.config.api_url, stack.config.anon_key, user)
        generated = frontend.call("generate-strategy", {"description": DEFAULT_DESCRIPTION})
        machine = Machine(fly, generated["machineId"])
        # The worker keeps the market's time (its cooldowns and timers run on the replay's clock).
        _set_risk(frontend, generated["trader"])
        machine.wait_healthy()
        report = ChaosReport(str(user.id), machine.id, options.kills, 0.0)

        market.resume()
        wall_secs = (end_ms - start_ms) / 1000 / options.speed
        gap_secs = wall_secs / (options.kills + 1)
        for _ in range(options.kills):
            time.sleep(rng.uniform(0.5, 1.5) * gap_secs)
            faults.burst()
            report.restarts.append(machine.kill())
            faults.calm()
        _run_until(market, end_ms, db, user.id)
        faults.clear()
        market.set_clock(paused=True)
        # The check's moment: positions open, and the worker just restarted from a kill.
        report.restarts.append(machine.kill())
        report.kills += 1
        report.run_secs = time.monotonic() - started
        report.gemini_faults, report.exchange_faults = faults.gemini_count, faults.exchange_count
        check_database(db, user.id, report)
        check_protection(db, user.id, machine)
        check_logs(stack, db, user.id, machine.id, fly)
        return report
    finally:
        faults.close()
        if frontend is not None:
            try:
                frontend.call("destroy-machine", {"reason": "user_request"})
            finally:
                frontend.close()
        market.restore()
        market.close()
        fly.close()


def _run_until(market: DemoMarket, end_ms: int, db: psycopg.Connection[Any], user_id: Any) -> None:
    """Let the market run to `end_ms`, then on (bounded) until a position is open and one has closed."""
    while int(market.state()["market_time_ms"]) < end_ms:
        time.sleep(0.2)
    deadline = time.monotonic() + EXTRA_RUN_SECS
    sql = "select count(*) filter (where status = 'open'), count(*) filter (where status = 'closed')"
    while not all(db.execute(f"{sql} from positions where user_id = %s", (user_id,)).fetchone() or (0, 0)):
        if time.monotonic() > deadline:
            raise ChaosFailure(
                f"no open and closed position {EXTRA_RUN_SECS:.0f} s after the run: nothing to check"
            )
        time.sleep(0.2)


def _rows(db: psycopg.Connection[Any], sql: str, *params: Any) -> list[dict[str, Any]]:
    cursor = db.execute(sql, params)
    names = [column.name for column in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def check_database(db: psycopg.Connection[Any], user_id: Any, report: ChaosReport) -> None:
    """Nothing duplicated or lost, PnL and the paper balance exact, no signal stuck."""
    trades = _rows(db, "select * from trades where user_id = %s", user_id)
    positions = _rows(db, "select * from positions where user_id = %s", user_id)
    signals = _rows(
        db, "select id, status::text, now() - created_at > make_interval(secs => %s) as old from signals"
        " where user_id = %s", STUCK_SIGNAL_SECS, user_id,
    )  # fmt: skip
    report.signals, report.closed_positions = len(signals), sum(p["status"] == "closed" for p in positions)
    report.open_positions_at_check = sum(p["status"] == "open" for p in positions)
    filled = [t for t in trades if t["status"] == "filled"]
    report.filled_trades = len(filled)
    if report.open_positions_at_check == 0 or not report.closed_positions:
        left = Counter(p["status"] for p in positions)
        raise ChaosFailure(f"the run must leave closed and open positions to check, left {left}")

    # No duplicated order or fill: one row per client order id, one position per signal and entry.
    duplicates = [key for key, n in Counter(t["client_order_id"] for t in trades).items() if n > 1]
    if duplicates:
        raise ChaosFailure(f"orders recorded twice: {duplicates}")
    per_signal = Counter(p["signal_id"] for p in positions if p["status"] == "open")
    if twice := [key for key, n in per_signal.items() if n > 1]:
        raise ChaosFailure(f"signals with two open positions: {twice}")
    pending = [t["client_order_id"] for t in trades if t["status"] == "pending"]
    if pending:
        raise ChaosFailure(f"orders left pending after recovery: {pending}")
    if orphans := [t["client_order_id"] for t in filled if t["position_id"] is None]:
        raise ChaosFailure(f"fills that belong to no position: {orphans}")
    for position in positions:
        own = [t for t in filled if t["position_id"] == position["id"]]
        bought = sum((t["quantity"] for t in own if t["side"] == "BUY"), Decimal(0))
        sold = sum((t["quantity"] for t in own if t["side"] == "SELL"), Decimal(0))
        held = (bought - sold) if position["side"] == "long" else (sold - bought)
        expected = position["size"] if position["status"] == "open" else Decimal(0)
        if held != expected:
            raise ChaosFailure(f"position {position['id']} holds {position['size']}, its fills {held}")

    # Each closed position's PnL equals its trades (the demo's check: sells - buys - fees, fills' realised).
    as_text = [{**t, "position_id": str(t["position_id"]) if t["position_id"] else None} for t in trades]
    try:
        check_positions([{**p, "id": str(p["id"])} for p in positions], as_text)
    except Exception as error:
        raise ChaosFailure(str(error)) from error

    # The paper balance equals the ledger: start + realised PnL - fees - the cost held in open positions.
    account = _rows(db, "select * from paper_accounts where user_id = %s", user_id)[0]
    realized = sum((p["realized_pnl"] or Decimal(0) for p in positions), Decimal(0))
    fees = sum((t["fee"] for t in filled), Decimal(0))
    held_cost = sum(
        (Decimal(str((p["metadata"] or {})["cost_basis"])) for p in positions if p["status"] == "open"),
        Decimal(0),
    )
    ledger = account["starting_balance_usd"] + realized - fees - held_cost
    if account["balance_usd"] != ledger:
        raise ChaosFailure(f"paper balance {account['balance_usd']} but the ledger says {ledger}")

    # No signal stuck: `new` only while in flight; position_open exactly while its position is open.
    if stuck := [s["id"] for s in signals if s["status"] == "new" and s["old"]]:
        raise ChaosFailure(f"signals stuck in new: {stuck}")
    open_signals = {p["signal_id"] for p in positions if p["status"] == "open"}
    status = {s["id"]: s["status"] for s in signals}
    if wrong := [s for s in open_signals if status.get(s) != "position_open"]:
        raise ChaosFailure(f"signals of open positions not position_open: {wrong}")
    if wrong := [s for s, st in status.items() if st == "position_open" and s not in open_signals]:
        raise ChaosFailure(f"signals position_open without an open position: {wrong}")


def check_protection(db: psycopg.Connection[Any], user_id: Any, machine: Machine) -> None:
    """Every open position has a stop in the database, and the restarted worker guards it."""
    stored = _rows(db, "select id, stop_loss from positions where user_id = %s and status = 'open'", user_id)
    if unguarded := [p["id"] for p in stored if p["stop_loss"] is None]:
        raise ChaosFailure(f"open positions without a stop-loss: {unguarded}")
    guarded = {str(p["id"]): p for p in machine.positions()}
    for position in stored:
        live = guarded.get(str(position["id"]))
        if live is None or live.get("stop_loss") is None:
            raise ChaosFailure(f"position {position['id']} is not guarded by the restarted worker: {live}")


def check_logs(stack: DevStack, db: psycopg.Connection[Any], user_id: Any, machine_id: str, fly: Any) -> None:
    """No secret of the machine (nor any JWT) in the machine's log, the stack's logs or machine_logs."""
    env = fly.get(machine_id)["config"].get("env", {})
    secrets = {value for name, value in env.items() if SECRET_ENV.search(name) and len(value) >= 8}
    texts: dict[str, str] = {
        path.name: path.read_text(errors="replace")
        for path in [stack.config.state_dir / "fly" / "machines" / f"{machine_id}.log",
                     *sorted(stack.config.logs_dir.glob("*.log"))]
        if path.exists()
    }  # fmt: skip
    shipped = _rows(db, "select message from machine_logs where user_id = %s", user_id)
    texts["machine_logs"] = "\n".join(str(row["message"]) for row in shipped)
    if not shipped:
        raise ChaosFailure("the worker shipped no log line to machine_logs")
    for name, text in texts.items():
        if any(secret in text for secret in secrets) or JWT.search(text):
            raise ChaosFailure(f"a secret or a JWT is in the log {name}")


def write_report(report: ChaosReport, path: Path) -> dict[str, Any]:
    figures = report.figures()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, default=str))
    return figures
