"""scale-machines against real workers on the Fly stand-in: an idle machine above its tier's base size is
scaled down through lease, update and health gate (row, billing, the user's notification follow); no
second resize within the cooldown; a resize whose new version never starts, or never gets healthy, is
rolled back to its old size; a later rollout (update-machines) keeps the size.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from devstack.fly.client import FlyStandInClient
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

    as_user = call(stack, "scale-machines", {}, token=user.jwt)
    bad = call(stack, "scale-machines", {"cooldownSecs": -1})
    unknown = call(stack, "scale-machines", {"everything": True})
    dry = call(stack, "scale-machines", {"userIds": [str(user.id)], "dryRun": True})

    assert as_user.status_code == 403
    assert bad.status_code == 400 and "cooldownSecs" in bad.json()["error"]["message"]
    assert unknown.status_code == 400
    assert dry.status_code == 200 and dry.json()["summary"]["total"] == 0
