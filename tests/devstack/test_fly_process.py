"""The stand-in as a process: no orphaned workers after SIGTERM or a crash; machines come back on restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from devstack import keys
from devstack.config import FLY_APP_NAME, FLY_DEV_TOKEN, REPO_ROOT
from devstack.fly.client import FlyStandInClient
from devstack.fly.machines import free_port, recorded_processes, stop_recorded_processes
from devstack.processes import process_start_ticks
from devstack.stack import DevStack
from tests.factories import AppUser, create_user, delete_user


def start_standin(state_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ["PATH"],
        "FLY_API_TOKEN": FLY_DEV_TOKEN,
        "FLY_APP_NAME": FLY_APP_NAME,
        "PYTHONPATH": str(REPO_ROOT),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.fly", "--port", str(port), "--edge-port", str(free_port()),
         "--state-dir", str(state_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_control/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("the stand-in did not come up")


def stop_standin(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
    process.wait(timeout=30)


def alive(pid: int) -> bool:
    return process_start_ticks(pid) is not None  # None for a gone process or a zombie


@pytest.fixture
def user(db: psycopg.Connection[Any], stack: DevStack) -> Iterator[AppUser]:
    app_user = create_user(db)
    yield app_user
    delete_user(db, app_user)


def launch(fly: FlyStandInClient, db: psycopg.Connection[Any], stack: DevStack, user: AppUser) -> str:
    machine_id = fly.create({"skip_launch": True, "config": {"image": "worker:restore-1"}}).json()["id"]
    db.execute("insert into public.fly_machines (user_id, machine_id) values (%s, %s)", (user.id, machine_id))
    env = {
        "USER_ID": str(user.id),
        "MACHINE_ID": machine_id,
        "SUPABASE_URL": stack.config.api_url,
        "SUPABASE_ANON_KEY": keys.ANON_KEY,
        "MACHINE_TOKEN": user.machine_jwt(machine_id),
        "MACHINE_API_SECRET": "restore-test-machine-secret-0123456789",
    }
    config = {"image": "worker:restore-1", "env": env, "restart": {"policy": "always"}}
    assert fly.update(machine_id, {"config": config}).status_code == 200
    assert fly.wait(machine_id, "started", 30).status_code == 200
    return machine_id


def test_sigterm_stops_every_worker_and_a_restart_brings_machines_back(
    tmp_path: Path, db: psycopg.Connection[Any], stack: DevStack, user: AppUser
) -> None:
    port = free_port()
    standin = start_standin(tmp_path, port)
    try:
        with FlyStandInClient(f"http://127.0.0.1:{port}") as fly:
            machine_id = launch(fly, db, stack, user)
            pid = fly.process(machine_id)["pid"]
        stop_standin(standin)
        gone_after_sigterm = not alive(pid)

        standin = start_standin(tmp_path, port)
        with FlyStandInClient(f"http://127.0.0.1:{port}") as fly:
            restored = fly.wait(machine_id, "started", 30)
            new_pid = fly.process(machine_id)["pid"]
            fly.delete(machine_id, force=True)
    finally:
        stop_standin(standin)

    assert gone_after_sigterm
    assert restored.status_code == 200
    assert new_pid != pid


def test_workers_of_a_crashed_standin_are_stopped_from_the_registry_file(
    tmp_path: Path, db: psycopg.Connection[Any], stack: DevStack, user: AppUser
) -> None:
    port = free_port()
    standin = start_standin(tmp_path, port)
    try:
        with FlyStandInClient(f"http://127.0.0.1:{port}") as fly:
            machine_id = launch(fly, db, stack, user)
            pid = fly.process(machine_id)["pid"]
    finally:
        stop_standin(standin, signal.SIGKILL)
    orphaned = alive(pid)
    recorded = recorded_processes(tmp_path)

    stopped = stop_recorded_processes(tmp_path)

    assert orphaned
    assert [recorded_pid for recorded_pid, _ in recorded] == [pid]
    assert stopped == 1
    assert not alive(pid)
