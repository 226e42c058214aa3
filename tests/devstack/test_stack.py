"""`trademind dev up/down/status/reset`: idempotent, every process recorded by pid, nothing left behind."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any

import httpx
import psycopg

from devstack import keys
from devstack.processes import process_group_members, process_start_ticks
from devstack.stack import DevStack
from devstack.supabase_cli import SupabaseCli


def port_is_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_status_shows_every_part_running_with_pid_and_port(stack: DevStack) -> None:
    parts = {part.name: part for part in stack.status()}

    assert set(parts) == set(stack.PARTS)
    assert {"postgres", "postgrest", "realtime", "functions", "gateway"} <= set(parts)
    assert all(part.running and part.pid for part in parts.values())
    assert parts["postgres"].port == stack.config.db_port
    assert parts["gateway"].port == stack.config.api_port


def test_up_is_idempotent(stack: DevStack) -> None:
    pids_before = {part.name: part.pid for part in stack.status()}

    stack.up()

    assert {part.name: part.pid for part in stack.status()} == pids_before


def test_down_stops_exactly_its_processes_and_up_brings_them_back(stack: DevStack) -> None:
    records = stack.records()
    groups = {record.pid: process_group_members(record.pid) for record in records}
    ports = [record.port for record in records if record.port]
    assert all(port_is_open(port) for port in ports)

    stopped = stack.down()

    assert sorted(stopped) == sorted(stack.PARTS)
    assert all(process_start_ticks(record.pid) is None for record in records)
    assert all(process_start_ticks(pid) is None for members in groups.values() for pid in members)
    assert not any(port_is_open(port) for port in ports)
    assert stack.down() == []
    assert not stack.is_up()

    stack.up()

    assert stack.is_up()


def test_reset_drops_data_and_reapplies_migrations_and_seed_as_the_cli_records_them(stack: DevStack) -> None:
    with stack.postgres.connect(autocommit=True) as conn:
        conn.execute("insert into auth.users (id, email) values (gen_random_uuid(), 'doomed@example.com')")
        cron_jobs_before = conn.execute("select jobname from cron.job order by 1").fetchall()

    stack.reset()
    # What failed before the CLI wrote the history itself: a second push of the seed, a duplicate key.
    SupabaseCli(stack.config).push()

    with stack.postgres.connect(autocommit=True) as conn:
        doomed = conn.execute("select count(*) from auth.users where email = 'doomed@example.com'").fetchone()
        seeded = conn.execute("select count(*) from public.traders").fetchone()
        history = "select version from supabase_migrations.schema_migrations order by 1"
        versions = conn.execute(history).fetchall()
        seeds = conn.execute("select path, hash from supabase_migrations.seed_files").fetchall()
        cron_jobs = conn.execute("select jobname from cron.job order by 1").fetchall()
    seed = stack.config.supabase_dir / "seed.sql"
    assert doomed == (0,)
    assert seeded == (2,)
    migrations = stack.config.migrations_dir.glob("*.sql")
    assert versions == sorted((path.name.split("_")[0],) for path in migrations)
    assert seeds == [("supabase/seed.sql", hashlib.sha256(seed.read_bytes()).hexdigest())]
    assert ("mark-stale-machines",) in cron_jobs
    assert cron_jobs == cron_jobs_before


def test_up_remakes_a_database_an_older_stack_bootstrapped(stack: DevStack) -> None:
    with stack.postgres.connect(autocommit=True) as conn:
        conn.execute("alter schema auth owner to supabase_auth_admin")  # as bootstrap.sql once made it
        conn.execute("create table public.left_behind (id int)")

    stack.up()

    with stack.postgres.connect(autocommit=True) as conn:
        owner = conn.execute("select nspowner::regrole::text from pg_namespace where nspname = 'auth'")
        owner_row = owner.fetchone()
        left_behind = conn.execute("select to_regclass('public.left_behind')").fetchone()
        seeded = conn.execute("select count(*) from public.traders").fetchone()
    assert (owner_row, left_behind, seeded) == (("supabase_admin",), (None,), (2,))
    assert stack.is_up()


def test_postgres_runs_as_an_unprivileged_user(stack: DevStack, db: psycopg.Connection[Any]) -> None:
    record = stack.registry.get("postgres")
    assert record is not None

    owner_uid = int(Path(f"/proc/{record.pid}/status").read_text().split("Uid:")[1].split()[0])

    assert owner_uid != 0
    assert db.execute("show wal_level").fetchone() == ("logical",)
    assert db.execute("show shared_preload_libraries").fetchone() == ("pg_cron",)
    assert db.execute("show synchronous_commit").fetchone() == ("on",)  # as hosted Supabase commits


def test_gateway_buffers_a_request_body_larger_than_memory_to_its_temp_folder(stack: DevStack) -> None:
    """nginx writes such bodies to disk as its unprivileged worker; a 0700 checkout must not stop it."""
    body = b'{"padding": "' + b"x" * 1_000_000 + b'"}'

    response = httpx.post(
        f"{stack.config.api_url}/functions/v1/ping",
        content=body,
        headers={"Authorization": f"Bearer {keys.SERVICE_ROLE_KEY}", "content-type": "application/json"},
        timeout=30,
    )

    assert response.status_code == 200
    assert response.json()["function"] == "ping"
