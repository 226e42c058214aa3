"""`trademind machines` against the local stack: the lifecycle functions, the Fly stand-in, real workers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from cli.main import app
from devstack.fly.client import FlyStandInClient
from devstack.stack import DevStack
from tests.factories import create_user, delete_user
from tests.supabase.test_lifecycle_functions import IMAGE_REPOSITORY, Fleet, wait_healthy

runner = CliRunner()


@pytest.fixture
def fleet(stack: DevStack, db: psycopg.Connection[Any]) -> Iterator[Fleet]:
    with FlyStandInClient() as fly:
        users = Fleet(stack, db, fly)
        try:
            yield users
        finally:
            fly.clear_faults()
            users.cleanup()


def machines(*args: str) -> Any:
    return runner.invoke(app, ["machines", "--local", *args])


def test_provision_list_health_and_destroy_a_users_machine(fleet: Fleet) -> None:
    user = fleet.user()

    provisioned = machines("provision", user.email, "--json")
    machine_id = json.loads(provisioned.stdout)["machineId"]
    wait_healthy(fleet.fly, machine_id)
    listed = machines("list", "--json")
    health = machines("health", "--json")
    destroyed = machines("destroy", str(user.id))

    assert provisioned.exit_code == 0, provisioned.output
    assert json.loads(provisioned.stdout)["status"] == "provisioned"
    mine = [row for row in json.loads(listed.stdout) if row["machine_id"] == machine_id]
    assert (mine[0]["user_id"], mine[0]["users"]["email"]) == (str(user.id), user.email)
    checked = {m["machineId"]: m for m in json.loads(health.stdout)["machines"]}
    assert (checked[machine_id]["healthy"], checked[machine_id]["version"]) == (True, "dev")
    assert destroyed.exit_code == 0, destroyed.output
    assert f"destroyed {machine_id} (graceful): 0 open position(s), 0 watching signal(s)" in destroyed.stdout
    assert fleet.row(user)[1] == "destroyed"


def test_provisioning_twice_returns_the_same_machine(fleet: Fleet) -> None:
    user = fleet.user()

    first = json.loads(machines("provision", str(user.id), "--json").stdout)
    second = json.loads(machines("provision", str(user.id), "--json").stdout)

    assert second["machineId"] == first["machineId"]
    assert second["status"] == "existing"


def test_rolling_update_moves_the_users_to_the_new_image(fleet: Fleet) -> None:
    provisioned = fleet.provisioned(2)
    users = [arg for user, _ in provisioned for arg in ("--user", str(user.id))]

    result = machines("update", "--image", f"{IMAGE_REPOSITORY}:cli-v2", "--max-unavailable", "1", *users)

    assert result.exit_code == 0, result.output
    assert "rollout complete: 2 updated, 0 failed" in result.stdout
    assert [fleet.row(user)[2] for user, _ in provisioned] == ["cli-v2", "cli-v2"]


def test_a_failed_health_check_stops_the_rollout_and_exits_non_zero(fleet: Fleet) -> None:
    provisioned = fleet.provisioned(2)
    image = f"{IMAGE_REPOSITORY}:cli-broken"
    fleet.fly.add_faults({"kind": "unhealthy", "machineId": provisioned[0][1], "image": image})
    users = [arg for user, _ in provisioned for arg in ("--user", str(user.id))]

    result = machines("update", "--image", image, "--json", *users)

    report = json.loads(result.stdout)
    assert result.exit_code == 1
    assert report["success"] is False
    outcomes = {m["machineId"]: m["status"] for m in report["machines"]}
    assert outcomes[provisioned[0][1]] == "failed"
    # The failed machine was put back on the version it ran before.
    [failed] = [m for m in report["machines"] if m["status"] == "failed"]
    assert failed["rollback"]["status"] == "rolled_back" and report["summary"]["rolledBack"] == 1


def test_dry_run_changes_nothing(fleet: Fleet) -> None:
    ((user, _),) = fleet.provisioned(1)
    version_before = fleet.row(user)[2]

    result = machines("update", "--image", f"{IMAGE_REPOSITORY}:never", "--dry-run", "--user", user.email)

    assert result.exit_code == 0
    assert "dry run: nothing changed" in result.stdout
    assert fleet.row(user)[2] == version_before


def test_tables_are_printed_for_people(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    ((user, machine_id),) = fleet.provisioned(1)

    listed = machines("list")
    health = machines("health")

    assert listed.exit_code == 0
    assert machine_id in listed.stdout and user.email in listed.stdout
    assert user.email in health.stdout and "yes" in health.stdout


def test_list_shows_each_users_month_to_date_cost(
    stack: DevStack, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    user = create_user(db, "elite")
    try:
        db.execute(
            "insert into public.fly_machines (user_id, machine_id, status, region, cpus, memory_mb)"
            " values (%s, %s, 'running', 'iad', 2, 512)",
            (user.id, f"cost-{user.id.hex[:8]}"),
        )
        # Two hours at shared-cpu-2x 512MB (2 x $2.19 per 30 days), and 1M + 100k gemini-3.5-flash tokens.
        db.execute(
            "update public.machine_usage set started_at = now() - interval '2 hours' where user_id = %s",
            (user.id,),
        )
        db.execute(
            "insert into public.ai_usage_daily"
            " (user_id, usage_date, prompt_tokens, completion_tokens, cost_usd)"
            " values (%s, (now() at time zone 'utc')::date, 1000000, 100000,"
            " public.ai_tokens_usd('gemini-3.5-flash', 1000000, 100000))",
            (user.id,),
        )
        db.execute(
            "insert into public.cost_budgets (user_id, monthly_budget_usd) values (%s, 25)", (user.id,)
        )
        monkeypatch.setenv("COLUMNS", "250")

        listed = machines("list", "--json")
        table = machines("list")
    finally:
        delete_user(db, user)

    assert listed.exit_code == 0, listed.output
    (row,) = [row for row in json.loads(listed.stdout) if row["user_id"] == str(user.id)]
    cost = row["cost_month_to_date"]
    machine_usd = 7200 * 2 * 2.19 / (30 * 86400)
    assert row["cpus"] == 2
    assert 7200 <= cost["machine_seconds"] <= 7205
    assert float(cost["machine_cost_usd"]) == pytest.approx(machine_usd, rel=1e-3)
    assert float(cost["ai_cost_usd"]) == pytest.approx(2.40)
    assert float(cost["total_cost_usd"]) == pytest.approx(2.40 + machine_usd, rel=1e-4)
    assert float(cost["monthly_budget_usd"]) == 25
    assert "2x512MB" in table.stdout and "$2.41" in table.stdout and "$25.00" in table.stdout


def test_operator_mistakes_are_named(stack: DevStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUPABASE_URL", raising=False)
    monkeypatch.delenv("SUPABASE_SERVICE_ROLE_KEY", raising=False)

    no_env = runner.invoke(app, ["machines", "list"])
    help_without_env = runner.invoke(app, ["machines", "update", "--help"])
    unknown_user = machines("destroy", "nobody@example.com")
    bad_strategy = machines("update", "--image", f"{IMAGE_REPOSITORY}:x", "--strategy", "yolo")

    assert no_env.exit_code == 2
    assert "set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY" in no_env.stderr
    assert help_without_env.exit_code == 0 and "Usage: trademind machines update" in help_without_env.stdout
    assert unknown_user.exit_code == 1
    assert "no user with id or email 'nobody@example.com'" in unknown_user.stderr
    assert bad_strategy.exit_code == 2
    assert "--strategy must be one of rolling, canary, immediate" in bad_strategy.stderr


def test_the_service_key_is_what_authorises_the_operator(
    stack: DevStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPABASE_URL", stack.config.api_url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", stack.config.anon_key)

    result = runner.invoke(app, ["machines", "health"])

    assert result.exit_code == 1
    assert "check-machine-health: 403" in result.stderr
