"""The Fly Machines API stand-in (the stack's `fly` part): spec-checked bodies, Fly's errors, states, leases,
waits, the restart policy, faults, and real `python -m worker` processes behind every machine."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from devstack import keys
from devstack.config import FLY_PORT
from devstack.fly.client import FlyStandInClient
from devstack.stack import DevStack
from tests.factories import AppUser, create_trader, create_user, delete_user

IMAGE = "registry.fly.io/trademind-workers:fly-test-1"
API_SECRET = "fly-test-machine-api-secret-0123456789"
# The worker's HTTP API as a service on the app's public edge (what provision-machine configures).
HTTP_SERVICE = {
    "protocol": "tcp",
    "internal_port": 8080,
    "ports": [{"port": 443, "handlers": ["tls", "http"]}],
    "autostart": False,
    "autostop": "off",
}


@pytest.fixture
def fly(stack: DevStack) -> Iterator[FlyStandInClient]:
    with FlyStandInClient() as client:
        yield client


class Machines:
    """Machines a test launched; destroyed (force) afterwards, with their users."""

    def __init__(self, fly: FlyStandInClient, db: psycopg.Connection[Any], stack: DevStack) -> None:
        self.fly, self.db, self.stack = fly, db, stack
        self.ids: list[str] = []
        self.users: list[AppUser] = []

    def config(self, user: AppUser, machine_id: str, image: str = IMAGE, **extra: Any) -> dict[str, Any]:
        env = {
            "USER_ID": str(user.id),
            "MACHINE_ID": machine_id,
            "SUPABASE_URL": self.stack.config.api_url,
            "SUPABASE_ANON_KEY": keys.ANON_KEY,
            "MACHINE_TOKEN": user.machine_jwt(machine_id),
            "MACHINE_API_SECRET": API_SECRET,
            "HEARTBEAT_INTERVAL_SECS": "1",
            "VERSION": image.rpartition(":")[2],
        }
        return {
            "image": image,
            "env": env,
            "services": [HTTP_SERVICE],
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
            "restart": {"policy": "on-failure", "max_retries": 10},
            "stop_config": {"signal": "SIGTERM", "timeout": "30s"},
            "metadata": {"trademind_user_id": str(user.id)},
        } | extra

    def created(self, *, user: AppUser | None = None) -> tuple[str, AppUser]:
        """A machine created stopped (skip_launch) with a fly_machines row, as provisioning does."""
        user = user or create_user(self.db)
        self.users.append(user)
        response = self.fly.create(
            {"name": f"t-{user.id}", "region": "iad", "skip_launch": True, "config": {"image": IMAGE}}
        )
        assert response.status_code == 200, response.text
        machine_id = response.json()["id"]
        self.ids.append(machine_id)
        self.db.execute(
            "insert into public.fly_machines (user_id, machine_id, status) values (%s, %s, 'provisioning')",
            (user.id, machine_id),
        )
        return machine_id, user

    def launched(self, image: str = IMAGE, *, healthy: bool = True, **extra: Any) -> tuple[str, AppUser]:
        machine_id, user = self.created()
        response = self.fly.update(machine_id, {"config": self.config(user, machine_id, image, **extra)})
        assert response.status_code == 200, response.text
        assert self.fly.wait(machine_id, version=response.json()["instance_id"]).status_code == 200
        if healthy:
            wait_healthy(self.fly, machine_id)
        return machine_id, user

    def cleanup(self) -> None:
        for machine_id in self.ids:
            self.fly.delete(machine_id, force=True)
        for user in self.users:
            delete_user(self.db, user)


@pytest.fixture
def machines(fly: FlyStandInClient, db: psycopg.Connection[Any], stack: DevStack) -> Iterator[Machines]:
    launched = Machines(fly, db, stack)
    try:
        yield launched
    finally:
        launched.cleanup()


def wait_healthy(fly: FlyStandInClient, machine_id: str, timeout_secs: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_secs
    last = None
    while time.monotonic() < deadline:
        response = fly.machine_http(machine_id, "/health")
        if response.status_code == 200:
            health: dict[str, Any] = response.json()
            return health
        last = response.text
        time.sleep(0.1)
    raise AssertionError(f"machine {machine_id} never became healthy: {last}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# Errors ------------------------------------------------------------------------------------------------
def test_requests_need_the_token_and_the_app(fly: FlyStandInClient) -> None:
    no_token = httpx.get(f"http://127.0.0.1:{FLY_PORT}{fly.machines_path()}")
    wrong_app = fly.request("GET", "/v1/apps/someone-else/machines")

    assert no_token.status_code == 401
    assert no_token.json() == {"error": "You must be authenticated to view this."}
    assert (wrong_app.status_code, wrong_app.json()) == (404, {"error": 'Could not find App "someone-else"'})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"config": {"image": 5}}, "invalid CreateMachineRequest at config.image: 5 is not of type 'string'"),
        ({"config": {"image": "x:1"}, "skip_launch": "yes"}, "at skip_launch: 'yes' is not of type"),
        ({"config": {"image": "x:1", "restart": {"policy": "sometimes"}}}, "at config.restart.policy"),
        ({"config": {"image": "x:1", "guest": {"cpus": 3}}}, "invalid number of CPUs for shared guest: 3"),
        ({"config": {"image": "x:1", "guest": {"memory_mb": 300}}}, "must be a multiple of 256"),
        ({"region": "iad"}, "config.image is required"),
    ],
)
def test_create_bodies_are_checked_against_the_spec(
    fly: FlyStandInClient, body: dict[str, Any], message: str
) -> None:
    response = fly.create(body)

    assert response.status_code == 400
    assert message in response.json()["error"]


def test_unknown_machine_is_404(fly: FlyStandInClient) -> None:
    response = fly.request("GET", fly.machines_path("/0123456789abcd"))

    assert (response.status_code, response.json()) == (404, {"error": "machine not found"})


# Lifecycle -------------------------------------------------------------------------------------------------
def test_machine_runs_the_worker_with_its_config_and_image_tag_as_version(
    machines: Machines, fly: FlyStandInClient, db: psycopg.Connection[Any]
) -> None:
    machine_id, user = machines.launched()

    machine = fly.get(machine_id)
    health = wait_healthy(fly, machine_id)
    row = db.execute(
        "select status::text, version from public.fly_machines where machine_id = %s", (machine_id,)
    ).fetchone()

    assert machine["state"] == "started"
    assert machine["image_ref"]["tag"] == "fly-test-1"
    assert len(machine["instance_id"]) == 26
    assert (health["machineId"], health["version"], health["status"]) == (machine_id, "fly-test-1", "healthy")
    assert row == ("running", "fly-test-1")
    assert fly.process(machine_id)["pid"] is not None
    assert user.id is not None


def test_stop_then_start_then_delete(machines: Machines, fly: FlyStandInClient) -> None:
    machine_id, _ = machines.launched()
    pid = fly.process(machine_id)["pid"]

    running_delete = fly.delete(machine_id)
    stop = fly.stop(machine_id, {"signal": "SIGTERM", "timeout": "20s"})
    stopped = fly.wait(machine_id, "stopped", 30)
    start = fly.start(machine_id)
    started = fly.wait(machine_id, "started", 30)
    new_pid = fly.process(machine_id)["pid"]
    fly.stop(machine_id)
    fly.wait(machine_id, "stopped", 30)
    delete = fly.delete(machine_id)

    assert running_delete.status_code == 412
    assert "not currently stopped" in running_delete.json()["error"]
    assert (stop.status_code, stop.json()) == (200, {"ok": True})
    assert stopped.json()["state"] == "stopped"
    assert not pid_alive(pid)
    assert start.json() == {"previous_state": "stopped", "migrated": False, "new_host": ""}
    assert started.status_code == 200 and new_pid != pid
    assert delete.json() == {"ok": True}
    assert fly.get(machine_id)["state"] == "destroyed"
    assert machine_id not in {m["id"] for m in fly.list_machines()}
    assert machine_id in {m["id"] for m in fly.list_machines(include_deleted="true")}
    assert fly.start(machine_id).status_code == 404


def test_update_replaces_the_version_and_restarts_the_worker(
    machines: Machines, fly: FlyStandInClient
) -> None:
    machine_id, user = machines.launched()
    before = fly.get(machine_id)
    new_image = "registry.fly.io/trademind-workers:fly-test-2"

    config = machines.config(user, machine_id, new_image)
    stale = fly.update(machine_id, {"config": config, "current_version": "01AAAAAAAAAAAAAAAAAAAAAAAA"})
    response = fly.update(
        machine_id,
        {"config": machines.config(user, machine_id, new_image), "current_version": before["instance_id"]},
    )
    new_version = response.json()["instance_id"]
    old_stopped = fly.wait(machine_id, "stopped", 30, version=before["instance_id"])
    new_started = fly.wait(machine_id, "started", 30, version=new_version)
    health = wait_healthy(fly, machine_id)
    events = [(event["type"], event["status"]) for event in fly.events(machine_id)]

    assert stale.status_code == 412
    assert response.status_code == 200 and response.json()["state"] == "replacing"
    assert new_version != before["instance_id"]
    assert old_stopped.status_code == 200 and new_started.json()["version"] == new_version
    assert health["version"] == "fly-test-2"
    assert events[:4] == [
        ("start", "started"), ("exit", "stopped"), ("update", "replacing"), ("start", "started")
    ]  # fmt: skip


def test_wait_times_out_with_408_and_checks_its_arguments(machines: Machines, fly: FlyStandInClient) -> None:
    machine_id, _ = machines.created()

    timed_out = fly.wait(machine_id, "started", 1)
    bad_state = fly.wait(machine_id, "sleeping", 1)
    bad_timeout = fly.request("GET", fly.machines_path(f"/{machine_id}/wait"), params={"timeout": "0"})
    not_in_spec = fly.wait(machine_id, "created", 1)  # the spec's enum: started, stopped, ... settled

    assert timed_out.status_code == 408
    assert timed_out.json()["error"].startswith(
        "deadline_exceeded: machine failed to reach desired state, started"
    )
    assert bad_state.status_code == 400
    assert bad_timeout.status_code == 400
    assert not_in_spec.status_code == 400 and "invalid state(s) ['created']" in not_in_spec.json()["error"]


# Leases ---------------------------------------------------------------------------------------------------
def test_a_lease_blocks_changes_from_anyone_without_its_nonce(
    machines: Machines, fly: FlyStandInClient
) -> None:
    machine_id, _ = machines.created()

    lease = fly.lease(machine_id, 30)
    nonce = lease.json()["data"]["nonce"]
    second = fly.lease(machine_id, 30)
    start_without = fly.start(machine_id)
    refresh = fly.lease(machine_id, 60, nonce=nonce)
    shown = fly.request("GET", fly.machines_path(f"/{machine_id}/lease"))
    release_without = fly.release(machine_id, None)
    release = fly.release(machine_id, nonce)
    start_after = fly.start(machine_id)

    assert lease.status_code == 201 and lease.json()["status"] == "success"
    assert second.status_code == 409 and "lease currently held by" in second.json()["error"]
    assert start_without.status_code == 409
    assert refresh.status_code == 201 and refresh.json()["data"]["nonce"] == nonce
    assert shown.json()["data"]["expires_at"] > time.time() + 50
    assert release_without.status_code == 409
    assert release.status_code == 200
    assert start_after.status_code == 200


# Restart policy ---------------------------------------------------------------------------------------------
def test_a_killed_worker_is_restarted_by_the_policy_and_recovers_its_state(
    machines: Machines, fly: FlyStandInClient, db: psycopg.Connection[Any]
) -> None:
    machine_id, user = machines.created()
    create_trader(db, user, "survives a kill")
    fly.update(machine_id, {"config": machines.config(user, machine_id)})
    wait_healthy(fly, machine_id)
    pid = fly.process(machine_id)["pid"]

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while fly.process(machine_id)["pid"] in (None, pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    health = wait_healthy(fly, machine_id)
    info = fly.process(machine_id)
    kinds = [event["type"] for event in fly.events(machine_id)]

    assert info["pid"] != pid and info["restarts"] == 1
    assert health["activeTraders"] == 1
    assert kinds[:2] == ["restart", "exit"]
    assert fly.get(machine_id)["state"] == "started"


def test_restart_policy_no_leaves_a_crashed_machine_failed(machines: Machines, fly: FlyStandInClient) -> None:
    machine_id, user = machines.created()
    config = machines.config(user, machine_id, restart={"policy": "no"})
    config["env"]["MACHINE_API_SECRET"] = "short"  # the worker refuses its settings and exits 78

    fly.update(machine_id, {"config": config})
    failed = fly.wait(machine_id, "failed", 30)

    assert failed.status_code == 200
    assert fly.events(machine_id)[0]["request"] == {"exit_event": {"exit_code": 78}}
    assert fly.process(machine_id)["restarts"] == 0


def test_restarts_follow_at_once_however_many_kills(machines: Machines, fly: FlyStandInClient) -> None:
    # Fly documents no delay before flyd restarts a machine, so the tenth kill is restarted as soon as the
    # first (a back-off growing to seconds would be Docker's policy, not Fly's).
    machine_id, user = machines.created()
    fly.update(machine_id, {"config": machines.config(user, machine_id, restart={"policy": "always"})})
    wait_healthy(fly, machine_id)

    for _ in range(6):
        pid = fly.process(machine_id)["pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while fly.process(machine_id)["pid"] in (None, pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    events = list(reversed(fly.events(machine_id)))
    delays_ms = [
        later["timestamp"] - event["timestamp"]
        for event, later in itertools.pairwise(events)
        if event["type"] == "exit" and later["type"] == "restart"
    ]

    assert fly.process(machine_id)["restarts"] == 6 and len(delays_ms) == 6
    assert max(delays_ms) < 1000, delays_ms  # Docker's doubling would be 3.2 s by the sixth


def test_on_failure_gives_up_after_max_retries_within_the_window(
    machines: Machines, fly: FlyStandInClient
) -> None:
    machine_id, user = machines.created()
    config = machines.config(user, machine_id, restart={"policy": "on-failure", "max_retries": 2})
    config["env"]["MACHINE_API_SECRET"] = "short"  # the worker refuses its settings and exits 78

    fly.update(machine_id, {"config": config})
    failed = fly.wait(machine_id, "failed", 30)

    assert failed.status_code == 200
    assert fly.process(machine_id)["restarts"] == 2
    assert [event["type"] for event in fly.events(machine_id)].count("exit") == 3


# Faults ------------------------------------------------------------------------------------------------
def test_never_start_fault_keeps_the_machine_starting(machines: Machines, fly: FlyStandInClient) -> None:
    machine_id, user = machines.created()
    fly.add_faults({"kind": "never_start", "machineId": machine_id, "count": 1})

    fly.update(machine_id, {"config": machines.config(user, machine_id)})
    waited = fly.wait(machine_id, "started", 2)

    assert waited.status_code == 408
    assert fly.get(machine_id)["state"] == "starting"
    assert fly.process(machine_id)["pid"] is None


def test_unhealthy_fault_runs_a_worker_that_never_answers_health(
    machines: Machines, fly: FlyStandInClient
) -> None:
    machine_id, user = machines.created()
    fly.add_faults({"kind": "unhealthy", "machineId": machine_id})

    fly.update(machine_id, {"config": machines.config(user, machine_id)})
    started = fly.wait(machine_id, "started", 10)
    time.sleep(1.5)
    health = fly.machine_http(machine_id, "/health")

    assert started.status_code == 200
    assert health.status_code in (502, 503)


def process_env(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().partition("=")[::2] for entry in entries if entry)


def test_an_unhealthy_fault_holds_for_its_version_through_restarts_and_not_the_next(
    machines: Machines, fly: FlyStandInClient, stack: DevStack
) -> None:
    # One use of the fault is one version: the worker that cannot reach Supabase gives up and exits, and the
    # restart policy's new process of that version is as unhealthy (a bad release stays bad).
    machine_id, user = machines.created()
    fly.add_faults({"kind": "unhealthy", "machineId": machine_id, "count": 1})

    fly.update(machine_id, {"config": machines.config(user, machine_id)})
    deadline = time.monotonic() + 60
    while (restarted := fly.process(machine_id))["restarts"] < 1 or restarted["pid"] is None:
        assert time.monotonic() < deadline, f"the unhealthy worker never exited: {restarted}"
        time.sleep(0.2)
    restarted_env = process_env(restarted["pid"])
    health = fly.machine_http(machine_id, "/health")
    fly.update(machine_id, {"config": machines.config(user, machine_id, f"{IMAGE}-next")})
    healthy = wait_healthy(fly, machine_id, timeout_secs=60)

    assert restarted_env["SUPABASE_URL"] != stack.config.api_url
    assert health.status_code != 200
    assert healthy["version"] == "fly-test-1-next"
    assert process_env(fly.process(machine_id)["pid"])["SUPABASE_URL"] == stack.config.api_url
    assert [fault for fault in fly.faults() if fault["machineId"] == machine_id] == []


def test_rate_limit_and_slow_api_faults(machines: Machines, fly: FlyStandInClient) -> None:
    machine_id, _ = machines.created()
    fly.add_faults({"kind": "rate_limit", "machineId": machine_id, "count": 2})

    limited = [fly.request("GET", fly.machines_path(f"/{machine_id}")) for _ in range(3)]
    fly.add_faults({"kind": "slow_api", "machineId": machine_id, "delayMs": 400, "count": 1})
    started = time.monotonic()
    slow = fly.request("GET", fly.machines_path(f"/{machine_id}"))
    slow_secs = time.monotonic() - started

    assert [response.status_code for response in limited] == [429, 429, 200]
    assert limited[0].json() == {"error": "rate limit exceeded"}
    assert limited[0].headers["retry-after"] == "1"
    assert slow.status_code == 200 and slow_secs >= 0.4


def test_a_broken_image_crashes_every_machine_that_boots_it(
    machines: Machines, fly: FlyStandInClient
) -> None:
    machine_id, user = machines.created()
    broken = "registry.fly.io/trademind-workers:fly-test-broken"
    config = machines.config(user, machine_id, broken, restart={"policy": "no"})
    fly.add_faults({"kind": "broken_image", "image": broken})
    try:
        fly.update(machine_id, {"config": config})
        failed = fly.wait(machine_id, "failed", 30)
    finally:
        fly.clear_faults()

    assert failed.status_code == 200
    assert fly.events(machine_id)[0]["request"] == {"exit_event": {"exit_code": 1}}
    with open(fly.process(machine_id)["logPath"]) as log:
        assert "exec format error" in log.read()


def test_fault_definitions_are_checked(fly: FlyStandInClient) -> None:
    response = httpx.post(f"{fly.base_url}/_control/faults", json={"faults": [{"kind": "meteor"}]})
    no_image = httpx.post(f"{fly.base_url}/_control/faults", json={"faults": [{"kind": "broken_image"}]})

    assert response.status_code == 400
    assert "unknown fault kind 'meteor'" in response.json()["error"]
    assert no_image.status_code == 400 and "names its image" in no_image.json()["error"]


# The app's edge (Fly Proxy) -------------------------------------------------------------------------------
def test_edge_delivers_to_the_machine_the_header_names(machines: Machines, fly: FlyStandInClient) -> None:
    (first, _), (second, _) = machines.launched(), machines.launched()

    answers = {machine_id: fly.machine_http(machine_id, "/health") for machine_id in (first, second)}
    unauthorised = fly.machine_http(first, "/reload-traders", "POST")
    reload = fly.machine_http(
        first, "/reload-traders", "POST", headers={"Authorization": f"Bearer {API_SECRET}"}
    )

    for machine_id, answer in answers.items():
        assert answer.status_code == 200 and answer.json()["machineId"] == machine_id
        assert answer.headers["fly-request-id"]
    assert unauthorised.status_code == 401
    assert reload.json() == {"success": True, "tradersLoaded": 0}
    delivered = fly.process(first)["edgeDeliveries"]
    assert delivered[-2:] == [
        {"method": "POST", "path": "/reload-traders", "forced": True, "status": 401},
        {"method": "POST", "path": "/reload-traders", "forced": True, "status": 200},
    ]


def test_edge_without_the_header_load_balances_over_started_machines(
    machines: Machines, fly: FlyStandInClient
) -> None:
    machine_id, _ = machines.launched()
    before = fly.edge_totals()

    answer = fly.edge_http("/health")

    assert answer.status_code == 200
    assert fly.edge_totals() == {"forced": before["forced"], "balanced": before["balanced"] + 1}
    assert answer.json()["machineId"] in {m["id"] for m in fly.list_machines(state="started")}
    assert machine_id


def test_edge_has_no_fallback_for_a_machine_it_cannot_reach(
    machines: Machines, fly: FlyStandInClient
) -> None:
    stopped_id, _ = machines.launched()
    fly.stop(stopped_id, {"signal": "SIGTERM"})
    fly.wait(stopped_id, "stopped", 30)
    no_service_id, _ = machines.launched(healthy=False, services=[])
    wrong_port_id, _ = machines.launched(healthy=False, services=[HTTP_SERVICE | {"internal_port": 9090}])
    delivered_before = len(fly.process(stopped_id)["edgeDeliveries"])

    unknown = fly.machine_http("0123456789abcd", "/health")
    started = time.monotonic()
    stopped = fly.machine_http(stopped_id, "/health")
    stopped_secs = time.monotonic() - started
    no_service = fly.machine_http(no_service_id, "/health")
    wrong_port = fly.machine_http(wrong_port_id, "/health")

    # Fly's proxy answers these itself (502, no body) and logs the reason; the worker never sees them.
    for answer in (unknown, stopped, no_service, wrong_port):
        assert (answer.status_code, answer.content) == (502, b"")
        assert answer.headers["fly-request-id"]
    assert stopped_secs >= 4  # it kept trying the machine before giving up
    assert fly.get(stopped_id)["state"] == "stopped"  # autostart is off: the proxy did not start it
    assert len(fly.process(stopped_id)["edgeDeliveries"]) == delivered_before
    assert fly.process(no_service_id)["edgeDeliveries"] == fly.process(wrong_port_id)["edgeDeliveries"] == []


def test_edge_starts_a_stopped_machine_whose_service_has_autostart(
    machines: Machines, fly: FlyStandInClient
) -> None:
    machine_id, _ = machines.launched(services=[HTTP_SERVICE | {"autostart": True}])
    fly.stop(machine_id, {"signal": "SIGTERM"})
    fly.wait(machine_id, "stopped", 30)

    answer = fly.machine_http(machine_id, "/health")

    assert answer.status_code in (200, 503) and answer.json()["machineId"] == machine_id
    assert fly.get(machine_id)["state"] == "started"
