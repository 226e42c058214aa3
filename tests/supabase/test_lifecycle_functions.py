"""Machine lifecycle end to end: the Edge Functions behind the gateway, real Postgres/PostgREST, the Fly
stand-in, and a real `python -m worker` process per machine."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jwt
import psycopg
import pytest

from devstack import keys
from devstack.config import EXCHANGE_PORT, FLY_DEV_IMAGE, MACHINE_SECRET_DEV_KEY
from devstack.fly.client import FlyStandInClient
from devstack.stack import DevStack
from tests.factories import AppUser, create_machine, create_trader, create_user, delete_user
from worker.settings import WorkerSettings

IMAGE_REPOSITORY = "registry.fly.io/trademind-workers"


def call(
    stack: DevStack, name: str, body: dict[str, Any], token: str = keys.SERVICE_ROLE_KEY
) -> httpx.Response:
    return httpx.post(
        f"{stack.config.api_url}/functions/v1/{name}",
        json=body,
        headers={"apikey": keys.ANON_KEY, "Authorization": f"Bearer {token}"},
        timeout=140,
    )


class Fleet:
    """Users (and their machines) a test created; machines force-destroyed and users deleted afterwards."""

    def __init__(self, stack: DevStack, db: psycopg.Connection[Any], fly: FlyStandInClient) -> None:
        self.stack, self.db, self.fly = stack, db, fly
        self.users: list[AppUser] = []

    def user(self, tier: str = "pro") -> AppUser:
        user = create_user(self.db, tier)
        self.users.append(user)
        return user

    def provisioned(self, count: int = 1, tier: str = "pro") -> list[tuple[AppUser, str]]:
        users = [self.user(tier) for _ in range(count)]
        with ThreadPoolExecutor(max_workers=min(count, 10)) as pool:
            responses = list(
                pool.map(lambda u: call(self.stack, "provision-machine", {"userId": str(u.id)}), users)
            )
        for response in responses:
            assert response.status_code == 201, response.text
        machines = [
            (user, response.json()["machineId"]) for user, response in zip(users, responses, strict=True)
        ]
        for _, machine_id in machines:
            wait_healthy(self.fly, machine_id)
        return machines

    def row(self, user: AppUser) -> tuple[Any, ...]:
        row = self.db.execute(
            "select machine_id, status::text, version, memory_mb, region, destroyed_at is not null"
            " from public.fly_machines where user_id = %s order by created_at desc limit 1",
            (user.id,),
        ).fetchone()
        assert row is not None
        return tuple(row)

    def cleanup(self) -> None:
        for user in self.users:
            for (machine_id,) in self.db.execute(
                "select machine_id from public.fly_machines where user_id = %s", (user.id,)
            ).fetchall():
                self.fly.delete(machine_id, force=True)
            delete_user(self.db, user)


@pytest.fixture
def fly(stack: DevStack) -> Iterator[FlyStandInClient]:
    with FlyStandInClient() as client:
        yield client


@pytest.fixture
def fleet(stack: DevStack, db: psycopg.Connection[Any], fly: FlyStandInClient) -> Iterator[Fleet]:
    users = Fleet(stack, db, fly)
    try:
        yield users
    finally:
        users.cleanup()


def wait_healthy(
    fly: FlyStandInClient, machine_id: str, version: str | None = None, timeout_secs: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_secs
    last = ""
    while time.monotonic() < deadline:
        response = fly.machine_http(machine_id, "/health")
        if response.status_code == 200 and (version is None or response.json()["version"] == version):
            health: dict[str, Any] = response.json()
            return health
        last = response.text
        time.sleep(0.1)
    raise AssertionError(f"machine {machine_id} not healthy: {last}")


def rollout_summary(total: int, **counts: int) -> dict[str, int]:
    """update-machines' summary: every outcome counted, zero unless given."""
    outcomes = ("updated", "failed", "rolledBack", "rollbackFailed", "skipped", "pending")
    return {"total": total} | {outcome: counts.get(outcome, 0) for outcome in outcomes}


def wait_until(predicate: Any, timeout_secs: float = 20) -> None:
    deadline = time.monotonic() + timeout_secs
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def fly_machines_of(fly: FlyStandInClient, user: AppUser) -> list[dict[str, Any]]:
    return [
        machine
        for machine in fly.list_machines()
        if machine["config"].get("metadata", {}).get("trademind_user_id") == str(user.id)
    ]


def open_position_and_watch_signal(db: psycopg.Connection[Any], user: AppUser) -> None:
    trader_id = create_trader(db, user, "lifecycle trader")
    db.execute(
        "insert into public.signals (trader_id, user_id, symbol, status, trigger_price)"
        " values (%s, %s, 'ETHUSDT', 'watching', 3000)",
        (trader_id, user.id),
    )
    signal_row = db.execute(
        "insert into public.signals (trader_id, user_id, symbol, status, trigger_price)"
        " values (%s, %s, 'BTCUSDT', 'position_open', 97000) returning id",
        (trader_id, user.id),
    ).fetchone()
    assert signal_row is not None
    db.execute(
        "insert into public.positions (signal_id, user_id, symbol, side, entry_price, size, stop_loss)"
        " values (%s, %s, 'BTCUSDT', 'long', 97000, 0.01, 95000)",
        (signal_row[0], user.id),
    )


def max_overlap(intervals: list[tuple[int, int]]) -> int:
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = best = 0
    for _, step in points:
        current += step
        best = max(best, current)
    return best


def down_interval(fly: FlyStandInClient, machine_id: str) -> tuple[int, int]:
    """From the stand-in's own events: the last update call until the new version's process started."""
    events = list(reversed(fly.events(machine_id)))
    update_ms = [e["timestamp"] for e in events if e["type"] == "update"][-1]
    started_ms = next(e["timestamp"] for e in events if e["type"] == "start" and e["timestamp"] >= update_ms)
    return update_ms, started_ms


# provision-machine ---------------------------------------------------------------------------------------
def test_provision_starts_a_worker_that_heartbeats_and_answers_health(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient
) -> None:
    user = fleet.user()

    response = call(stack, "provision-machine", {"userId": str(user.id)})
    body = response.json()
    machine_id = body["machineId"]
    health = wait_healthy(fly, machine_id)
    wait_until(lambda: fleet.row(user)[1] == "running")

    assert response.status_code == 201
    assert body["status"] == "provisioned"
    assert body["machine"] | {"createdAt": None} == {
        "machineId": machine_id, "userId": str(user.id), "status": "starting", "state": "started",
        "region": "iad", "memoryMb": 256, "version": "dev", "createdAt": None,
    }  # fmt: skip
    assert (health["machineId"], health["version"], health["status"]) == (machine_id, "dev", "healthy")
    assert fleet.row(user) == (machine_id, "running", "dev", 256, "iad", False)
    machine = fly.get(machine_id)
    assert machine["config"]["image"] == FLY_DEV_IMAGE
    assert machine["config"]["guest"] == {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}
    assert machine["config"]["restart"] == {"policy": "on-failure", "max_retries": 10}
    assert machine["config"]["env"]["PAPER_TRADING_ONLY"] == "true"
    assert "BINANCE_API_KEY" not in machine["config"]["env"]
    # Every variable the machine is given is a setting the worker reads (it ignores unknown names).
    settings = {name.upper() for name in WorkerSettings.model_fields}
    assert sorted(set(machine["config"]["env"]) - settings) == []


def test_provisioning_twice_or_concurrently_gives_one_machine(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient, db: psycopg.Connection[Any]
) -> None:
    user = fleet.user()

    with ThreadPoolExecutor(max_workers=5) as pool:
        concurrent = list(
            pool.map(lambda _: call(stack, "provision-machine", {"userId": str(user.id)}), range(5))
        )
    again = call(stack, "provision-machine", {"userId": str(user.id)})

    statuses = sorted(response.json()["status"] for response in concurrent)
    machine_ids = {response.json().get("machineId") for response in concurrent} - {None}
    assert statuses.count("provisioned") == 1
    assert set(statuses) <= {"provisioned", "existing", "in_progress"}
    assert again.status_code == 200 and again.json()["status"] == "existing"
    assert machine_ids == {again.json()["machineId"]}
    assert len(fly_machines_of(fly, user)) == 1
    rows = db.execute("select count(*) from public.fly_machines where user_id = %s", (user.id,)).fetchone()
    assert rows == (1,)


def test_machine_size_follows_the_tier(stack: DevStack, fleet: Fleet, fly: FlyStandInClient) -> None:
    sizes = {}
    for tier in ("elite", "power"):
        user = fleet.user(tier)
        machine_id = call(stack, "provision-machine", {"userId": str(user.id)}).json()["machineId"]
        sizes[tier] = fly.get(machine_id)["config"]["guest"]["memory_mb"]

    assert sizes == {"elite": 512, "power": 1024}


def test_provision_refuses_the_wrong_callers_and_bodies(
    stack: DevStack, fleet: Fleet, db: psycopg.Connection[Any]
) -> None:
    free, alice, bob, carol = fleet.user("free"), fleet.user(), fleet.user(), fleet.user()

    free_tier = call(stack, "provision-machine", {"userId": str(free.id)})
    for_someone_else = call(stack, "provision-machine", {"userId": str(bob.id)}, alice.jwt)
    # A live machine's own token (carol's, so the count below stays about the refused calls).
    as_machine = call(stack, "provision-machine", {}, carol.machine_jwt(create_machine(db, carol)))
    no_user = call(stack, "provision-machine", {})
    bad_region = call(stack, "provision-machine", {"userId": str(alice.id), "region": "Frankfurt"})
    unknown_field = call(stack, "provision-machine", {"userId": str(alice.id), "size": "huge"})
    anon = call(stack, "provision-machine", {"userId": str(alice.id)}, keys.ANON_KEY)

    def error(response: httpx.Response) -> tuple[int, str]:
        return response.status_code, response.json()["error"]["code"]

    assert error(free_tier) == (403, "tier_not_eligible")
    assert error(for_someone_else) == (403, "forbidden")
    assert error(as_machine) == (403, "forbidden")
    assert error(no_user) == (400, "invalid_body")
    assert error(bad_region) == (400, "invalid_body")
    assert error(unknown_field) == (400, "invalid_body")
    assert error(anon) == (403, "forbidden")
    assert fleet.db.execute(
        "select count(*) from public.fly_machines where user_id = any(%s)", ([free.id, alice.id, bob.id],)
    ).fetchone() == (0,)


def test_a_user_provisions_and_destroys_their_own_machine(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient
) -> None:
    user = fleet.user()

    provisioned = call(stack, "provision-machine", {}, user.jwt)
    machine_id = provisioned.json()["machineId"]
    wait_healthy(fly, machine_id)
    destroyed = call(stack, "destroy-machine", {}, user.jwt)

    assert provisioned.status_code == 201
    assert destroyed.status_code == 200
    assert destroyed.json()["machineId"] == machine_id
    assert fly.get(machine_id)["state"] == "destroyed"


def test_a_real_trading_machine_gets_a_scoped_token_its_api_secret_and_keys_that_never_leak(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient, db: psycopg.Connection[Any]
) -> None:
    user = fleet.user()
    # An account the exchange simulator knows, so the machine's real-mode venue starts against it.
    account = httpx.post(
        f"http://127.0.0.1:{EXCHANGE_PORT}/_sim/accounts", json={"balances": {"USDT": "1000"}}, timeout=10
    ).json()
    api_key, secret_key = account["apiKey"], account["secretKey"]
    db.execute(
        "select set_config('request.jwt.claims', %s, false), set_config('role', 'authenticated', false)",
        (json.dumps({"sub": str(user.id), "role": "authenticated"}),),
    )
    try:
        db.execute("select public.set_binance_keys(%s, %s)", (api_key, secret_key))
        db.execute("update public.users set real_trading_enabled = true where id = %s", (user.id,))
    finally:
        db.execute("reset role")
        db.execute("select set_config('request.jwt.claims', '', false)")

    response = call(stack, "provision-machine", {"userId": str(user.id)})
    machine_id = response.json()["machineId"]
    env = fly.get(machine_id)["config"]["env"]
    claims = keys.decode(env["MACHINE_TOKEN"])
    expected_secret = base64.urlsafe_b64encode(
        hmac.new(
            MACHINE_SECRET_DEV_KEY.encode(), f"machine-api-secret:{user.id}".encode(), hashlib.sha256
        ).digest()
    ).rstrip(b"=")
    wait_healthy(fly, machine_id)
    functions_log = (stack.config.logs_dir / "functions.log").read_text(errors="replace")

    assert (claims["role"], claims["sub"], claims["machine_id"]) == (
        "trader_machine",
        str(user.id),
        machine_id,
    )
    assert claims["exp"] - claims["iat"] == 3600 and claims["machine_gen"] == 1
    assert jwt.get_unverified_header(env["MACHINE_TOKEN"])["alg"] == "ES256"
    assert env["MACHINE_API_SECRET"] == expected_secret.decode()
    assert (env["BINANCE_API_KEY"], env["BINANCE_API_SECRET"]) == (api_key, secret_key)
    assert env["PAPER_TRADING_ONLY"] == "false"
    for secret in (
        api_key,
        secret_key,
        env["MACHINE_TOKEN"],
        env["MACHINE_API_SECRET"],
        env["MACHINE_CREDENTIAL"],
    ):
        assert secret not in response.text
        assert secret not in functions_log


def test_a_fly_failure_while_provisioning_leaves_no_machine_and_can_be_retried(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient
) -> None:
    user = fleet.user()
    fly.add_faults({"kind": "rate_limit", "metadata": {"trademind_user_id": str(user.id)}, "count": 1})

    failed = call(stack, "provision-machine", {"userId": str(user.id)})
    row_after_failure = fleet.row(user)
    retried = call(stack, "provision-machine", {"userId": str(user.id)})

    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "fly_error"
    assert row_after_failure[1] == "destroyed" and row_after_failure[5]
    assert retried.status_code == 201
    assert len(fly_machines_of(fly, user)) == 1


def test_generate_strategy_provisions_the_users_machine(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient
) -> None:
    user = fleet.user()

    response = call(
        stack,
        "generate-strategy",
        {"description": "Buy BTC on the 1h chart when RSI drops below 25 and volume spikes"},
        user.jwt,
    )

    body = response.json()
    assert response.status_code == 200, response.text
    assert body["machine"]["status"] == "provisioned"
    assert body["machineId"] == fleet.row(user)[0]
    health = wait_healthy(fly, body["machineId"])
    assert health["activeTraders"] == 1


# destroy-machine ---------------------------------------------------------------------------------------
def test_destroy_shuts_down_gracefully_and_reports_the_final_state(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient, db: psycopg.Connection[Any]
) -> None:
    [(user, machine_id)] = fleet.provisioned()
    open_position_and_watch_signal(db, user)
    log_path = fly.process(machine_id)["logPath"]

    response = call(stack, "destroy-machine", {"userId": str(user.id), "reason": "subscription_cancelled"})

    assert response.status_code == 200
    assert response.json() == {
        "success": True, "message": "Machine destroyed", "machineId": machine_id, "graceful": True,
        "openPositions": 1, "watchingSignals": 1, "finalStateSource": "machine",
    }  # fmt: skip
    assert fly.get(machine_id)["state"] == "destroyed"
    assert fly.process(machine_id)["pid"] is None
    assert fleet.row(user)[1] == "destroyed" and fleet.row(user)[5]
    with open(log_path) as log:
        assert "worker stopped reason=SIGTERM" in log.read()
    assert call(stack, "destroy-machine", {"userId": str(user.id)}).status_code == 404


def test_destroy_of_an_unreachable_machine_reads_the_final_state_from_the_database(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient, db: psycopg.Connection[Any]
) -> None:
    [(user, machine_id)] = fleet.provisioned()
    open_position_and_watch_signal(db, user)
    fly.add_faults({"kind": "never_start", "machineId": machine_id})
    os.kill(fly.process(machine_id)["pid"], signal.SIGKILL)
    wait_until(lambda: fly.get(machine_id)["state"] == "starting")

    response = call(stack, "destroy-machine", {"userId": str(user.id)})

    assert response.status_code == 200
    body = response.json()
    assert (body["graceful"], body["finalStateSource"]) == (False, "database")
    assert (body["openPositions"], body["watchingSignals"]) == (1, 1)
    assert fly.get(machine_id)["state"] == "destroyed"


def test_destroy_is_refused_for_other_users_and_while_leased(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient
) -> None:
    [(owner, machine_id)] = fleet.provisioned()
    intruder = fleet.user()
    nonce = fly.lease(machine_id, 30).json()["data"]["nonce"]

    other = call(stack, "destroy-machine", {"userId": str(owner.id)}, intruder.jwt)
    leased = call(stack, "destroy-machine", {"userId": str(owner.id)})
    bad_reason = call(stack, "destroy-machine", {"userId": str(owner.id), "reason": "bored"})
    fly.release(machine_id, nonce)

    assert (other.status_code, other.json()["error"]["code"]) == (403, "forbidden")
    assert (leased.status_code, leased.json()["error"]["code"]) == (409, "machine_busy")
    assert bad_reason.status_code == 400
    assert fly.get(machine_id)["state"] == "started"


# update-machines -------------------------------------------------------------------------------------
def test_rolling_update_of_ten_machines_keeps_at_most_max_unavailable_down(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient, db: psycopg.Connection[Any]
) -> None:
    machines = fleet.provisioned(10)
    tokens_before = {m: fly.get(m)["config"]["env"]["MACHINE_TOKEN"] for _, m in machines}
    tag = f"roll-{uuid.uuid4().hex[:8]}"

    response = call(
        stack,
        "update-machines",
        {
            "image": f"{IMAGE_REPOSITORY}:{tag}",
            "maxUnavailable": 3,
            "userIds": [str(u.id) for u, _ in machines],
        },
    )

    body = response.json()
    assert response.status_code == 200, response.text
    assert (body["success"], body["complete"]) == (True, True)
    assert body["summary"] == rollout_summary(total=10, updated=10)
    assert sorted(r["batch"] for r in body["machines"]) == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4]
    for user, machine_id in machines:
        assert wait_healthy(fly, machine_id)["version"] == tag
        assert fly.get(machine_id)["config"]["env"]["MACHINE_TOKEN"] != tokens_before[machine_id]
        wait_until(lambda u=user: fleet.row(u)[2] == tag)
    overlap = max_overlap([down_interval(fly, machine_id) for _, machine_id in machines])
    assert 1 < overlap <= 3
    # Batches never overlap: each batch began after the previous one had finished (healthy).
    by_batch: dict[int, list[dict[str, Any]]] = {}
    for result in body["machines"]:
        by_batch.setdefault(result["batch"], []).append(result)
    for batch in range(2, 5):
        assert min(r["startedAt"] for r in by_batch[batch]) >= max(
            r["finishedAt"] for r in by_batch[batch - 1]
        )

    again = call(
        stack,
        "update-machines",
        {"image": f"{IMAGE_REPOSITORY}:{tag}", "userIds": [str(u.id) for u, _ in machines]},
    )
    assert again.json()["summary"]["skipped"] == 10


def test_a_machine_that_fails_its_health_gate_is_rolled_back_and_the_rollout_halts(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient
) -> None:
    machines = sorted(fleet.provisioned(4), key=lambda pair: pair[1])
    image = f"{IMAGE_REPOSITORY}:bad-{uuid.uuid4().hex[:8]}"
    fly.add_faults({"kind": "unhealthy", "machineId": machines[1][1], "image": image})

    response = call(
        stack,
        "update-machines",
        {"image": image, "userIds": [str(u.id) for u, _ in machines], "healthTimeoutSecs": 30},
    )

    body = response.json()
    results = {result["machineId"]: result for result in body["machines"]}
    assert response.status_code == 200
    assert (body["success"], body["complete"], body["halted"]) == (False, False, True)
    assert body["summary"] == rollout_summary(total=4, updated=1, failed=1, rolledBack=1, pending=2)
    assert [results[m]["status"] for _, m in machines] == ["updated", "failed", "pending", "pending"]
    failed = results[machines[1][1]]
    assert failed["stage"] == "health"
    assert "did not pass with version" in failed["error"]
    assert failed["rollback"]["status"] == "rolled_back" and failed["rollback"]["version"] == "dev"
    assert fly.get(machines[1][1])["config"]["image"] == FLY_DEV_IMAGE
    assert wait_healthy(fly, machines[1][1])["version"] == "dev"  # back on its previous version
    assert wait_healthy(fly, machines[2][1])["version"] == "dev"  # untouched
    assert fly.get(machines[3][1])["config"]["image"] == FLY_DEV_IMAGE


def test_a_rollout_of_a_broken_image_leaves_every_machine_on_a_healthy_version(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient
) -> None:
    machines = sorted(fleet.provisioned(3), key=lambda pair: pair[1])
    image = f"{IMAGE_REPOSITORY}:broken-{uuid.uuid4().hex[:8]}"
    fly.add_faults({"kind": "broken_image", "image": image})
    tokens_before = {m: fly.get(m)["config"]["env"]["MACHINE_TOKEN"] for _, m in machines}

    try:
        response = call(
            stack,
            "update-machines",
            {"image": image, "userIds": [str(u.id) for u, _ in machines], "healthTimeoutSecs": 30},
        )
    finally:
        fly.clear_faults()

    body = response.json()
    [failed] = [result for result in body["machines"] if result["status"] == "failed"]
    assert response.status_code == 200
    assert (body["success"], body["halted"]) == (False, True)
    assert body["summary"] == rollout_summary(total=3, failed=1, rolledBack=1, pending=2)
    assert failed["stage"] in ("wait", "health")
    assert failed["rollback"]["status"] == "rolled_back"
    for user, machine_id in machines:
        machine = fly.get(machine_id)
        assert (machine["state"], machine["config"]["image"]) == ("started", FLY_DEV_IMAGE)
        assert wait_healthy(fly, machine_id)["version"] == "dev"
        wait_until(lambda u=user: fleet.row(u)[2] == "dev")
    # The rolled-back machine runs its previous config with a token of its own, not the one it had.
    rolled_back = failed["machineId"]
    assert fly.get(rolled_back)["config"]["env"]["MACHINE_TOKEN"] != tokens_before[rolled_back]
    log = (stack.config.state_dir / "fly" / "machines" / f"{rolled_back}.log").read_text()
    assert "exec format error" in log


def test_a_version_that_stays_unhealthy_through_its_restarts_is_rolled_back(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient
) -> None:
    machines = sorted(fleet.provisioned(2), key=lambda pair: pair[1])
    image = f"{IMAGE_REPOSITORY}:unhealthy-{uuid.uuid4().hex[:8]}"
    # Only the new version of the first machine (one use): its worker cannot reach Supabase, gives up and is
    # restarted by the restart policy, still unhealthy; the gate lasts long enough to see that restart.
    fly.add_faults({"kind": "unhealthy", "machineId": machines[0][1], "count": 1})

    response = call(
        stack,
        "update-machines",
        {"image": image, "userIds": [str(u.id) for u, _ in machines], "healthTimeoutSecs": 30},
    )

    body = response.json()
    first, second = ({r["machineId"]: r for r in body["machines"]}[m] for _, m in machines)
    assert response.status_code == 200, response.text
    assert (body["success"], body["halted"]) == (False, True)
    assert body["summary"] == rollout_summary(total=2, failed=1, rolledBack=1, pending=1)
    assert (first["status"], first["stage"]) == ("failed", "health")
    assert first["rollback"]["status"] == "rolled_back"
    assert fly.process(machines[0][1])["restarts"] >= 1, "the gate ended before the worker restarted"
    assert second["status"] == "pending"
    for user, machine_id in machines:
        assert fly.get(machine_id)["config"]["image"] == FLY_DEV_IMAGE
        assert wait_healthy(fly, machine_id)["version"] == "dev"
        wait_until(lambda u=user: fleet.row(u)[2] == "dev")


def test_a_rollback_that_fails_too_is_reported(stack: DevStack, fleet: Fleet, fly: FlyStandInClient) -> None:
    [(user, machine_id)] = fleet.provisioned()
    scope = {"trademind_user_id": str(user.id)}
    image = f"{IMAGE_REPOSITORY}:broken-{uuid.uuid4().hex[:8]}"
    # Both the new image and, from now on, the one it runs are broken for this user's machine.
    fly.add_faults(
        {"kind": "broken_image", "image": image, "metadata": scope},
        {"kind": "broken_image", "image": FLY_DEV_IMAGE, "metadata": scope},
    )

    try:
        response = call(
            stack,
            "update-machines",
            {"image": image, "userIds": [str(user.id)], "healthTimeoutSecs": 5, "waitTimeoutSecs": 20},
        )
    finally:
        fly.clear_faults()

    [result] = response.json()["machines"]
    assert response.json()["summary"]["rollbackFailed"] == 1
    assert result["status"] == "failed" and result["stage"] in ("wait", "health")
    assert result["rollback"]["status"] == "failed"
    assert result["rollback"]["stage"] in ("rollback-wait", "rollback-health")
    assert result["rollback"]["version"] == "dev"
    assert fly.get(machine_id)["config"]["image"] == FLY_DEV_IMAGE


def test_continue_on_failure_updates_the_rest_and_reports_every_outcome(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient
) -> None:
    machines = sorted(fleet.provisioned(3), key=lambda pair: pair[1])
    image = f"{IMAGE_REPOSITORY}:mixed-{uuid.uuid4().hex[:8]}"
    fly.add_faults({"kind": "unhealthy", "machineId": machines[0][1], "image": image})

    response = call(
        stack,
        "update-machines",
        {
            "image": image, "maxUnavailable": 1, "continueOnFailure": True, "healthTimeoutSecs": 30,
            "userIds": [str(u.id) for u, _ in machines],
        },
    )  # fmt: skip

    body = response.json()
    assert [r["status"] for r in body["machines"]] == ["failed", "updated", "updated"]
    assert body["machines"][0]["rollback"]["status"] == "rolled_back"
    assert (body["success"], body["halted"]) == (False, False)


def test_update_is_for_operators_and_a_dry_run_changes_nothing(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient
) -> None:
    machines = fleet.provisioned(2)
    user_ids = [str(u.id) for u, _ in machines]

    as_user = call(stack, "update-machines", {"image": f"{IMAGE_REPOSITORY}:x"}, machines[0][0].jwt)
    no_image = call(stack, "update-machines", {"maxUnavailable": 1})
    bad_strategy = call(stack, "update-machines", {"image": f"{IMAGE_REPOSITORY}:x", "strategy": "yolo"})
    dry = call(
        stack,
        "update-machines",
        {"image": f"{IMAGE_REPOSITORY}:x", "dryRun": True, "strategy": "canary", "userIds": user_ids},
    )

    assert (as_user.status_code, as_user.json()["error"]["code"]) == (403, "forbidden")
    assert no_image.status_code == 400 and bad_strategy.status_code == 400
    assert dry.status_code == 200
    assert dry.json()["summary"]["pending"] == 2 and dry.json()["dryRun"] is True
    assert sorted(r["batch"] for r in dry.json()["machines"]) == [1, 2]
    assert all(fly.get(m)["config"]["image"] == FLY_DEV_IMAGE for _, m in machines)


# check-machine-health -----------------------------------------------------------------------------------
def test_health_fans_out_and_summarises(stack: DevStack, fleet: Fleet, fly: FlyStandInClient) -> None:
    (alice, healthy_id), (bob, stopped_id) = fleet.provisioned(2)
    fly.stop(stopped_id, {"signal": "SIGTERM"})
    fly.wait(stopped_id, "stopped", 30)

    operator = call(stack, "check-machine-health", {"userIds": [str(alice.id), str(bob.id)]})
    own = call(stack, "check-machine-health", {}, alice.jwt)
    others = call(stack, "check-machine-health", {"userIds": [str(bob.id)]}, alice.jwt)

    body = operator.json()
    by_machine = {m["machineId"]: m for m in body["machines"]}
    assert (body["success"], body["summary"]) == (False, {"total": 2, "healthy": 1, "unhealthy": 1})
    healthy = by_machine[healthy_id]
    identity = ("userId", "machineId", "state", "status", "version", "healthy")
    assert {key: healthy[key] for key in identity} == {
        "userId": str(alice.id), "machineId": healthy_id, "state": "started", "status": "running",
        "version": "dev", "healthy": True,
    }  # fmt: skip
    assert (healthy["activeTraders"], healthy["openPositions"]) == (0, 0)
    assert healthy["components"]["heartbeat"] == "running"
    assert set(healthy["components"].values()) <= {"starting", "running"}
    assert 0 <= by_machine[healthy_id]["heartbeatAgeSecs"] < 60
    assert by_machine[stopped_id]["state"] == "stopped" and by_machine[stopped_id]["healthy"] is False
    assert "unreachable" in by_machine[stopped_id]["error"]
    assert [m["machineId"] for m in own.json()["machines"]] == [healthy_id]
    assert others.status_code == 403


# How the functions reach machines -----------------------------------------------------------------------
def test_functions_reach_machines_only_through_the_edge_with_the_routing_header(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient
) -> None:
    (alice, alice_machine), (bob, bob_machine) = fleet.provisioned(2)
    deliveries_before = {m: len(fly.process(m)["edgeDeliveries"]) for m in (alice_machine, bob_machine)}
    totals_before = fly.edge_totals()

    health = call(stack, "check-machine-health", {"userIds": [str(alice.id), str(bob.id)]})
    destroyed = call(stack, "destroy-machine", {"userId": str(bob.id)})

    # Each machine answered for itself: the edge delivered by fly-force-instance-id, never load-balanced.
    assert {m["machineId"]: m["healthy"] for m in health.json()["machines"]} == {
        alice_machine: True,
        bob_machine: True,
    }
    assert destroyed.json()["finalStateSource"] == "machine"
    assert fly.edge_totals()["balanced"] == totals_before["balanced"]
    new_deliveries = {
        machine_id: fly.process(machine_id)["edgeDeliveries"][deliveries_before[machine_id] :]
        for machine_id in (alice_machine, bob_machine)
    }
    health_call = {"method": "GET", "path": "/health", "forced": True, "status": 200}
    assert new_deliveries[alice_machine] == [health_call]
    assert new_deliveries[bob_machine] == [
        health_call,
        {"method": "POST", "path": "/prepare-shutdown", "forced": True, "status": 200},
    ]
    # No private address to take instead: the functions get the edge only, the workers listen on ports
    # only the stand-in knows, and the machines carry the HTTP service Fly's proxy needs.
    assert "MACHINE_URL_TEMPLATE" not in stack.config.functions_env()
    assert fly.get(alice_machine)["config"]["services"] == [
        {
            "protocol": "tcp",
            "internal_port": 8080,
            "ports": [{"port": 443, "handlers": ["tls", "http"]}],
            "autostart": False,
            "autostop": "off",
        }
    ]


# Recovery and the watchdog -----------------------------------------------------------------------------
def test_a_worker_killed_while_trading_is_restarted_and_recovers_its_state(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient, db: psycopg.Connection[Any]
) -> None:
    [(user, machine_id)] = fleet.provisioned()
    open_position_and_watch_signal(db, user)
    pid = fly.process(machine_id)["pid"]

    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: fly.process(machine_id)["pid"] not in (None, pid))
    health = wait_healthy(fly, machine_id)

    assert (health["activeTraders"], health["openPositions"]) == (1, 1)
    assert fly.process(machine_id)["restarts"] == 1
    wait_until(lambda: fleet.row(user)[1] == "running")


def test_the_heartbeat_watchdog_marks_a_frozen_machine_error(
    stack: DevStack, fleet: Fleet, fly: FlyStandInClient, db: psycopg.Connection[Any]
) -> None:
    [(user, machine_id)] = fleet.provisioned()
    wait_until(lambda: fleet.row(user)[1] == "running")
    pid = fly.process(machine_id)["pid"]

    os.kill(pid, signal.SIGSTOP)
    try:
        # Two minutes of silence, without waiting two minutes: move the last beat back.
        db.execute(
            "update public.fly_machines set last_heartbeat = now() - interval '3 minutes'"
            " where machine_id = %s",
            (machine_id,),
        )
        db.execute("select private.mark_stale_machines()")
        row = db.execute(
            "select status::text, error_message from public.fly_machines where machine_id = %s", (machine_id,)
        ).fetchone()
    finally:
        os.kill(pid, signal.SIGCONT)

    assert row is not None and row[0] == "error"
    assert row[1].startswith("no heartbeat since")
