"""scale-machines against real workers on the Fly stand-in: an idle machine above its tier's base size is
scaled down through lease, update and health gate (row, billing, the user's notification follow); no
second resize within the cooldown; a resize whose new version never starts, or never gets healthy, is
rolled back to its old size; a later rollout (update-machines) keeps the size; a 256 MB machine given 100
traders x 200 symbols holds them and has itself scaled up before it runs a sweep for them (none missed, none
run on the small machine), and is scaled down again to its base size once the load has gone, a resize per
cooldown at most; a machine may ask only for its own sizing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from bench.bench_worker_memory import MARKET_START, SIMULATOR, signal_code
from devstack.fly.client import FlyStandInClient
from devstack.fly.machines import free_port
from devstack.stack import DevStack
from tests.factories import AppUser
from tests.supabase.test_lifecycle_functions import IMAGE_REPOSITORY, Fleet, call, wait_healthy

PAUSE_CRON = "select cron.alter_job(jobid, active := %s) from cron.job where jobname = 'scale-machines'"


@pytest.fixture
def fleet(stack: DevStack, db: psycopg.Connection[Any]) -> Iterator[Fleet]:
    # pg_cron runs scale-machines every minute; these tests call it themselves, so the job waits meanwhile.
    db.execute(PAUSE_CRON, (False,))
    with FlyStandInClient() as fly:
        users = Fleet(stack, db, fly)
        try:
            yield users
        finally:
            fly.clear_faults()
            users.cleanup()
            db.execute(PAUSE_CRON, (True,))


def _running(db: psycopg.Connection[Any], machine_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = db.execute(
            "select status::text from public.fly_machines where machine_id = %s", (machine_id,)
        ).fetchone()
        if row == ("running",):
            return
        time.sleep(0.2)
    raise AssertionError(f"machine {machine_id} never reported running")


def _grow(fleet: Fleet, machine_id: str, cpus: int, memory_mb: int) -> None:
    """Put the machine at a larger size, as an earlier scale-up would have (Fly config and row)."""
    config = fleet.fly.get(machine_id)["config"]
    config["guest"] = {"cpu_kind": "shared", "cpus": cpus, "memory_mb": memory_mb}
    assert fleet.fly.update(machine_id, {"config": config}).status_code == 200
    wait_healthy(fleet.fly, machine_id, timeout_secs=60)
    fleet.db.execute(
        "update public.fly_machines set cpus = %s, memory_mb = %s where machine_id = %s",
        (cpus, memory_mb, machine_id),
    )
    _running(fleet.db, machine_id)
    # /metrics averages CPU since the previous call: start a quiet window after the restart's busy start.
    assert fleet.fly.machine_http(machine_id, "/metrics").status_code == 200
    time.sleep(3)


def _grown_machine(fleet: Fleet) -> tuple[AppUser, str]:
    """A pro user's running machine, grown to 2 vCPU / 512 MB as an earlier scale-up would have."""
    ((user, machine_id),) = fleet.provisioned(1, "pro")
    _running(fleet.db, machine_id)
    _grow(fleet, machine_id, 2, 512)
    return user, machine_id


def _scale(stack: DevStack, user_id: str, **body: Any) -> dict[str, Any]:
    response = call(stack, "scale-machines", {"userIds": [user_id], **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_an_idle_machine_is_scaled_down_once_per_cooldown_and_a_failed_resize_rolled_back(
    stack: DevStack, fleet: Fleet
) -> None:
    user, machine_id = _grown_machine(fleet)

    down = _scale(stack, str(user.id), cooldownSecs=300)
    after_down = fleet.fly.get(machine_id)["config"]["guest"]
    _running(fleet.db, machine_id)
    _grow(fleet, machine_id, 2, 512)
    again = _scale(stack, str(user.id), cooldownSecs=300)
    fleet.fly.add_faults({"kind": "never_start", "machineId": machine_id, "count": 1})
    failed = _scale(stack, str(user.id), cooldownSecs=0, waitTimeoutSecs=5)
    after_failure = fleet.fly.get(machine_id)["config"]["guest"]

    (first,) = down["machines"]
    assert first["status"] == "resized", json.dumps(first)
    assert (first["from"], first["to"]) == ({"cpus": 2, "memoryMb": 512}, {"cpus": 1, "memoryMb": 256})
    assert first["load"]["memoryLimitMb"] == 512 and first["load"]["memoryMb"] > 0
    assert (after_down["cpus"], after_down["memory_mb"]) == (1, 256)
    assert again["machines"][0]["status"] == "cooldown", again
    (rolled,) = failed["machines"]
    assert rolled["status"] == "rolled_back", json.dumps(rolled)
    assert rolled["stage"] == "wait" and rolled["rollback"]["status"] == "rolled_back"
    assert (after_failure["cpus"], after_failure["memory_mb"]) == (2, 512), "back on the size it had"
    resizes = fleet.db.execute(
        "select status::text, to_cpus, to_memory_mb from public.machine_resizes where machine_id = %s"
        " order by started_at",
        (machine_id,),
    ).fetchall()
    assert resizes == [("applied", 1, 256), ("rolled_back", 1, 256)]
    notes = fleet.db.execute(
        "select title from public.notifications where user_id = %s and kind = 'machine_resized'", (user.id,)
    ).fetchall()
    assert notes == [("Machine resized to 1 vCPU / 256 MB",)]
    usage = fleet.db.execute(
        "select cpus, memory_mb from public.machine_usage where machine_id = %s and ended_at is null",
        (machine_id,),
    ).fetchall()
    assert usage == [(2, 512)], "billing follows the size the row records"


def test_a_resized_version_that_stays_unhealthy_is_rolled_back_to_its_size(
    stack: DevStack, fleet: Fleet
) -> None:
    user, machine_id = _grown_machine(fleet)
    # The resized version only (one use): its worker cannot reach Supabase, and neither can its restarts.
    fleet.fly.add_faults({"kind": "unhealthy", "machineId": machine_id, "count": 1})

    failed = _scale(stack, str(user.id), cooldownSecs=0, healthTimeoutSecs=30)

    (rolled,) = failed["machines"]
    assert rolled["status"] == "rolled_back", json.dumps(rolled)
    assert (rolled["stage"], rolled["rollback"]["status"]) == ("health", "rolled_back")
    assert fleet.fly.process(machine_id)["restarts"] >= 1, "the gate ended before the worker restarted"
    guest = fleet.fly.get(machine_id)["config"]["guest"]
    assert (guest["cpus"], guest["memory_mb"]) == (2, 512), "back on the size it had"
    assert wait_healthy(fleet.fly, machine_id)["version"] == "dev"


def test_a_rollout_keeps_the_size_a_machine_was_scaled_to(stack: DevStack, fleet: Fleet) -> None:
    user, machine_id = _grown_machine(fleet)

    image = f"{IMAGE_REPOSITORY}:sized-{uuid.uuid4().hex[:8]}"

    response = call(stack, "update-machines", {"image": image, "userIds": [str(user.id)]})

    assert response.status_code == 200 and response.json()["summary"]["updated"] == 1, response.text
    guest = fleet.fly.get(machine_id)["config"]["guest"]
    assert (guest["cpu_kind"], guest["cpus"], guest["memory_mb"]) == ("shared", 2, 512)


def test_only_service_role_may_scale_and_bad_bodies_are_named(stack: DevStack, fleet: Fleet) -> None:
    user = fleet.user()

    ((owner, machine_id),) = fleet.provisioned(1, "pro")
    machine_jwt = owner.machine_jwt(machine_id)

    as_user = call(stack, "scale-machines", {}, token=user.jwt)
    machine_naming_users = call(stack, "scale-machines", {"userIds": [str(user.id)]}, token=machine_jwt)
    machine_choosing = call(stack, "scale-machines", {"cooldownSecs": 0}, token=machine_jwt)
    bad = call(stack, "scale-machines", {"cooldownSecs": -1})
    unknown = call(stack, "scale-machines", {"everything": True})
    dry = call(stack, "scale-machines", {"userIds": [str(user.id)], "dryRun": True})

    assert as_user.status_code == 403
    assert machine_naming_users.status_code == 403 and machine_choosing.status_code == 403
    assert bad.status_code == 400 and "cooldownSecs" in bad.json()["error"]["message"]
    assert unknown.status_code == 400
    assert dry.status_code == 200 and dry.json()["summary"]["total"] == 0


# Under load ----------------------------------------------------------------------------------------------
LOAD_TRADERS = 100
LOAD_SYMBOLS = [f"L{index:03d}USDT" for index in range(200)]
LOAD_TIMEFRAMES = ["1m", "5m", "1h"]
LOAD_MARKET_SPEED = 10.0  # a 1m candle closes every 6 s: every trader's sweep of 200 symbols is due then
LOAD_COOLDOWN_SECS = 60  # scale-machines' cooldown, 5 minutes in production, shortened for the test
SCALER_EVERY_SECS = 5.0  # pg_cron calls it every minute; here as often relative to the shorter cooldown
FIGURES = ("sweepLoadRatio", "sweepsMissed", "cpuPercent", "memoryMb", "memoryLimitMb")  # printed per call


@pytest.fixture
def many_symbols_exchange() -> Iterator[str]:
    """An exchange simulator replaying the recorded BTCUSDT candles under 200 names; its URL."""
    port = free_port()
    symbols = ",".join(LOAD_SYMBOLS)
    args = [sys.executable, "-c", SIMULATOR, str(port), MARKET_START, symbols, str(LOAD_MARKET_SPEED)]
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    ) as simulator:
        try:
            assert simulator.stdout is not None and simulator.stdout.readline().strip() == "ready"
            yield f"http://127.0.0.1:{port}"
        finally:
            simulator.terminate()
            simulator.wait(timeout=30)


def _oom_kills(fleet: Fleet, machine_id: str) -> int:
    events = fleet.fly.get(machine_id).get("events") or []
    return sum(1 for event in events if (event.get("request") or {}).get("exit_event", {}).get("oom_killed"))


def _scale_until(
    stack: DevStack, fleet: Fleet, user: AppUser, machine_id: str, *, outcome: str, timeout_secs: float
) -> list[dict[str, Any]]:
    """Call scale-machines as pg_cron would until the machine's outcome is `outcome`; every answer."""
    answers: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        (machine,) = _scale(stack, str(user.id), cooldownSecs=LOAD_COOLDOWN_SECS)["machines"]
        machine["at"] = time.monotonic()
        machine["oomKills"] = _oom_kills(fleet, machine_id)
        answers.append(machine)
        if machine["status"] == outcome:
            return answers
        # As pg_cron's next call would: a machine too busy to answer /metrics in 5 s is asked again.
        assert machine["status"] in ("unchanged", "cooldown", "unreachable"), json.dumps(machine)
        time.sleep(SCALER_EVERY_SECS)
    raise AssertionError(f"no {outcome} in {timeout_secs} s: {json.dumps(answers[-3:])}")


def _watch_until_resized(fleet: Fleet, machine_id: str, *, timeout_secs: float) -> list[dict[str, Any]]:
    """The machine's /metrics load and its traders' checks, every half second until Fly has its new size (the
    readings, seconds from the first)."""
    readings: list[dict[str, Any]] = []
    started = time.monotonic()
    while fleet.fly.get(machine_id)["config"]["guest"]["cpus"] == 1:
        assert time.monotonic() - started < timeout_secs, f"not resized in {timeout_secs} s: {readings[-3:]}"
        assert _oom_kills(fleet, machine_id) == 0, "the 256 MB machine died before it was resized"
        with contextlib.suppress(httpx.HTTPError):  # stopping for the resize
            metrics = fleet.fly.machine_http(machine_id, "/metrics")
            traders = fleet.fly.machine_http(machine_id, "/metrics/traders")
            if metrics.status_code == traders.status_code == 200:
                checks = sum(t["checks"] for t in traders.json()["traders"].values())
                at = time.monotonic() - started
                readings.append({"at": at, "load": metrics.json()["load"], "checks": checks})
        time.sleep(0.5)
    return readings


def _finished_resize(fleet: Fleet, machine_id: str) -> tuple[Any, ...]:
    """The machine's one resize once scale-machines has recorded how it ended (after its health gate)."""
    deadline = time.monotonic() + 120
    while True:
        (resize,) = fleet.db.execute(
            "select status::text, from_cpus, from_memory_mb, to_cpus, to_memory_mb, reason"
            " from public.machine_resizes where machine_id = %s",
            (machine_id,),
        ).fetchall()
        if resize[0] != "in_progress" or time.monotonic() > deadline:
            return tuple(resize)
        time.sleep(0.5)


def test_a_machine_given_100_traders_x_200_symbols_is_scaled_up_and_down_again_once_per_cooldown(
    stack: DevStack, fleet: Fleet, many_symbols_exchange: str
) -> None:
    ((user, machine_id),) = fleet.provisioned(1, "pro")
    config = fleet.fly.get(machine_id)["config"]
    assert (config["guest"]["cpus"], config["guest"]["memory_mb"]) == (1, 256)
    config["env"] = {
        **config["env"],
        "BINANCE_BASE_URL": many_symbols_exchange,
        "DEFAULT_SYMBOLS": LOAD_SYMBOLS[0],
    }
    assert fleet.fly.update(machine_id, {"config": config}).status_code == 200
    wait_healthy(fleet.fly, machine_id)
    _running(fleet.db, machine_id)

    # The load arrives. The worker's trader sync takes the traders; the worker holds them (no series, no
    # backfill, no sweep), predicts their sweeps at 83% of their interval on its one vCPU, and asks
    # scale-machines itself. The test only watches the small machine (pg_cron is paused).
    with fleet.db.transaction():
        for index in range(LOAD_TRADERS):
            fleet.db.execute(
                "insert into public.traders (user_id, name, signal_code, ai_instructions, timeframes,"
                " check_interval, reanalysis_interval, symbols)"
                " values (%s, %s, %s, '-', %s, '1m_close', '1h', %s)",
                (user.id, f"load {index}", signal_code(index), LOAD_TIMEFRAMES, LOAD_SYMBOLS),
            )
    small = _watch_until_resized(fleet, machine_id, timeout_secs=120)
    wait_healthy(fleet.fly, machine_id)
    _running(fleet.db, machine_id)
    up = _finished_resize(fleet, machine_id)
    # The bigger machine takes the load on: every trader has swept twice there.
    deadline = time.monotonic() + 120
    swept = False
    while not swept and time.monotonic() < deadline:
        time.sleep(2)
        traders = fleet.fly.machine_http(machine_id, "/metrics/traders").json()["traders"]
        swept = len(traders) == LOAD_TRADERS and all(
            t["checks"] >= 2 * len(LOAD_SYMBOLS) for t in traders.values()
        )
    assert swept, "the 2 vCPU / 512 MB machine did not sweep for its traders"
    grown = fleet.fly.get(machine_id)["config"]["guest"]
    grown_metrics = fleet.fly.machine_http(machine_id, "/metrics").json()
    carried = _scale(stack, str(user.id), cooldownSecs=LOAD_COOLDOWN_SECS)["machines"][0]

    # The load goes: the machine is scaled down step by step to its base size, a step per cooldown at most.
    fleet.db.execute("delete from public.traders where user_id = %s", (user.id,))
    unloaded: list[dict[str, Any]] = []
    while not unloaded or unloaded[-1]["to"] != {"cpus": 1, "memoryMb": 256}:
        assert len(unloaded) < 200, "never back at its base size"
        timeout_secs = LOAD_COOLDOWN_SECS + 180
        unloaded += _scale_until(stack, fleet, user, machine_id, outcome="resized", timeout_secs=timeout_secs)
        wait_healthy(fleet.fly, machine_id)
        _running(fleet.db, machine_id)
    downs = [answer for answer in unloaded if answer["status"] == "resized"]
    after = _scale(stack, str(user.id), cooldownSecs=LOAD_COOLDOWN_SECS)["machines"][0]
    resizes = fleet.db.execute(
        "select status::text, to_cpus, to_memory_mb, started_at from public.machine_resizes"
        " where machine_id = %s order by started_at",
        (machine_id,),
    ).fetchall()

    for reading in small:  # the figures, shown with -s
        print("1 vCPU / 256 MB", f"{reading['at']:.1f}s", reading["checks"], reading["load"])
    print("scale-up:", up)
    for answer in [carried, *unloaded]:
        load = answer.get("load") or {}
        print(answer["status"], answer["from"], answer.get("to"), {k: load.get(k) for k in FIGURES})
    # Scaled up before it missed a sweep: it ran none for the traders on the small machine, by design (they
    # were held until the answer), and the resize was for the CPU their sweeps were predicted to take.
    assert small and all(reading["load"]["sweepsMissed"] == 0 for reading in small), small
    assert all(reading["checks"] == 0 for reading in small), "a trader swept on the small machine"
    assert up[:5] == ("applied", 1, 256, 2, 512), up
    assert up[5].startswith("CPU ") and "predicted" in up[5], up
    # The 2-vCPU machine's sweeps are figures here, not assertions: its 2 vCPUs are this host's 2 cores,
    # shared with the stack, the exchange and the test.
    assert carried["status"] in ("unchanged", "cooldown", "unreachable"), carried  # not resized again
    assert (grown["cpus"], grown["memory_mb"]) == (2, 512) and grown_metrics["load"]["memoryLimitMb"] == 512
    assert _oom_kills(fleet, machine_id) == 0
    assert 1 <= len(downs) <= 2 and all(down["to"]["cpus"] == 1 for down in downs), downs
    assert after["status"] in ("unchanged", "cooldown"), after
    if len(downs) == 2:  # one step down (memory under 60% of 256 MB too) came a cooldown after the scale-up
        assert any(answer["status"] == "cooldown" for answer in unloaded), "the scaler was told to wait"
    expected = [(2, 512)] + [(down["to"]["cpus"], down["to"]["memoryMb"]) for down in downs]
    assert [row[:3] for row in resizes] == [("applied", *size) for size in expected], resizes
    # Never more than once per cooldown (the database counts it from a resize's start).
    starts = [row[3] for row in resizes]
    assert all((b - a).total_seconds() >= LOAD_COOLDOWN_SECS for a, b in itertools.pairwise(starts)), starts
