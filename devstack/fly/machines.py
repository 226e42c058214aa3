"""The fleet: machine records, their state machine, and one local `python -m worker` process per machine.

States follow Fly's (machine-states doc): `created` (skip_launch), `starting`, `started`, `stopping`,
`stopped`, `replacing` (an update in progress), `destroying`, `destroyed`, `failed`. An update gives the
machine a new version (`instance_id`); the old one is `replaced`. The restart policy (`no`, `always`,
`on-failure` with `max_retries`, default 10, counted within a 5-minute window) decides what happens when a
process exits on its own. Fly documents no delay before a restart (restart-policy doc, Machines API
`fly.MachineRestart`), so flyd's restart is immediate here too: no growing back-off (that is Docker's
100 ms doubling).

The registry lives in memory and in `<state>/machines.json` (pids included), so `trademind dev down` can
stop every worker process even after the stand-in itself crashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from devstack.config import EXCHANGE_PORT
from devstack.fly.faults import FaultBook, FaultKind
from devstack.fly.guest import enforce_memory, guest_size, pin_to_cpus
from devstack.processes import process_start_ticks

logger = logging.getLogger(__name__)

REGISTRY_FILE = "machines.json"
DEFAULT_STOP_TIMEOUT_SECS = 5.0  # Fly's kill_timeout default
DEFAULT_ON_FAILURE_RETRIES = 10
ON_FAILURE_WINDOW_SECS = 300.0  # "up to max_retries times within a 5-minute window"
EVENTS_KEPT = 100
# A port nothing listens on: an `unhealthy` machine's worker is pointed there for Supabase.
UNREACHABLE_URL = "http://127.0.0.1:9"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_BROKEN_IMAGE_ENTRYPOINT = (
    "import sys; print('Error: failed to spawn command: python -m worker: exec format error',"
    " file=sys.stderr); sys.exit(1)"
)


class MachineState(StrEnum):
    CREATED = "created"
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"
    REPLACING = "replacing"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"
    FAILED = "failed"


# `settled` in /wait means any state that is not on its way somewhere else.
SETTLED_STATES = frozenset(
    {MachineState.STARTED, MachineState.STOPPED, MachineState.DESTROYED, MachineState.FAILED}
)
RUNNING_STATES = frozenset({MachineState.STARTING, MachineState.STARTED})


class MachineConflict(Exception):
    """The machine's current state does not allow the request (Fly answers 412)."""


def new_version_id() -> str:
    """A 26-character ULID (48-bit ms time + 80 random bits, Crockford base32), like Fly's versions."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def new_machine_id() -> str:
    return secrets.token_hex(7)  # Fly machine ids are 14 hex characters


def rfc3339(epoch_secs: float) -> str:
    return datetime.fromtimestamp(epoch_secs, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_ref(image: str) -> dict[str, Any]:
    """Split `registry/repository:tag` the way Fly reports `image_ref`."""
    name, _, digest = image.partition("@")
    registry, _, rest = name.partition("/") if "/" in name else ("docker.io", "", name)
    repository, _, tag = rest.rpartition(":") if ":" in rest else (rest, "", "latest")
    fake_digest = "sha256:" + hashlib.sha256(image.encode()).hexdigest()
    return {
        "registry": registry,
        "repository": repository,
        "tag": tag or "latest",
        "digest": digest or fake_digest,
        "labels": {},
    }


def parse_duration_secs(value: object, default: float) -> float:
    """Fly durations: "30s", "1m", "500ms", or a bare number of seconds."""
    if value is None or value == "":
        return default
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            try:
                return float(text.removesuffix(suffix)) * factor
            except ValueError:
                break
    raise ValueError(f"invalid duration {value!r}; expected e.g. '30s' or '500ms'")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(slots=True)
class Lease:
    nonce: str
    owner: str
    description: str
    expires_at: float
    version: str

    def active(self) -> bool:
        return self.expires_at > time.time()

    def as_json(self) -> dict[str, Any]:
        return {
            "nonce": self.nonce,
            "expires_at": int(self.expires_at),
            "owner": self.owner,
            "description": self.description,
            "version": self.version,
        }


@dataclass(slots=True)
class Run:
    """One launched process of a machine version."""

    process: asyncio.subprocess.Process
    http_port: int
    start_ticks: int | None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    # PSS (kB) at which the guest's memory limit killed it; None while it stayed within the limit.
    oom_killed_at_kb: int | None = None


@dataclass(slots=True)
class Machine:
    """A machine record; mutated only by the Fleet, under the machine's operation lock."""

    id: str
    name: str
    region: str
    config: dict[str, Any]
    instance_id: str
    state: MachineState
    created_at: float
    updated_at: float
    private_ip: str
    versions: list[dict[str, Any]] = field(default_factory=list)
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    lease: Lease | None = None
    run: Run | None = None
    # False once someone asked the machine to stop: an exit is then not a crash.
    wants_running: bool = False
    restarts: int = 0
    # When flyd restarted the process (monotonic seconds), for on-failure's 5-minute window.
    restarted_at: deque[float] = field(default_factory=deque)
    # The version an `unhealthy` fault hit: every process of that version (restarts too) cannot reach
    # Supabase, as a bad release stays bad however often it restarts. A new version (update) is itself again.
    unhealthy_version: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def http_port(self) -> int | None:
        return self.run.http_port if self.run is not None else None

    def as_json(self, *, summary: bool = False, nonce: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "region": self.region,
            "instance_id": self.instance_id,
            "private_ip": self.private_ip,
            "image_ref": image_ref(str(self.config.get("image", ""))),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        }
        if not summary:
            body |= {
                "config": self.config,
                "events": list(reversed(self.events))[:10],
                "checks": [],
                "host_status": "ok",
            }
        if nonce is not None:
            body["nonce"] = nonce
        return body


class Fleet:
    """Every machine of one app, and the processes behind them (supervised in the caller's TaskGroup)."""

    def __init__(
        self,
        *,
        app_name: str,
        state_dir: Path,
        python: str,
        repo_root: Path,
        faults: FaultBook,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.app_name = app_name
        self._state_dir = state_dir
        self._logs_dir = state_dir / "machines"
        self._python = python
        self._repo_root = repo_root
        self._faults = faults
        self._extra_env = dict(extra_env or {})
        self._machines: dict[str, Machine] = {}
        self._closing = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None

    # Lookup -------------------------------------------------------------------------------------------------
    def get(self, machine_id: str) -> Machine | None:
        return self._machines.get(machine_id)

    def all(self) -> list[Machine]:
        return sorted(self._machines.values(), key=lambda machine: machine.created_at)

    def log_path(self, machine_id: str) -> Path:
        return self._logs_dir / f"{machine_id}.log"

    # Lifecycle of the fleet itself ------------------------------------------------------------------------
    def attach(self, group: asyncio.TaskGroup) -> None:
        """Supervisor and background tasks run in `group` (owned by the server's main coroutine)."""
        self._group = group

    def _spawn_task(self, coroutine: Any, name: str) -> None:
        if self._group is None:
            raise RuntimeError("the fleet is not attached to a TaskGroup")
        self._group.create_task(coroutine, name=name)

    async def restore(self) -> None:
        """Load the registry file: stop processes a crashed predecessor left, relaunch started machines."""
        for pid, start_ticks in recorded_processes(self._state_dir):
            await asyncio.to_thread(_terminate, pid, start_ticks)
        for record in _read_registry(self._state_dir):
            state = MachineState(record["state"])
            if state is MachineState.DESTROYED:
                continue
            machine = Machine(
                id=record["id"],
                name=record["name"],
                region=record["region"],
                config=record["config"],
                instance_id=record["instance_id"],
                state=MachineState.STOPPED if state is not MachineState.CREATED else state,
                created_at=record["created_at"],
                updated_at=time.time(),
                private_ip=record["private_ip"],
                versions=record.get("versions", []),
            )
            self._machines[machine.id] = machine
            if state in RUNNING_STATES or state is MachineState.REPLACING:
                async with machine.lock:
                    await self._launch(machine, event="start", source="flyd")
        self._save()

    async def shutdown(self) -> None:
        """Stop every running machine (the stand-in is going away); the registry keeps their configs."""
        self._closing.set()
        running = [machine for machine in self._machines.values() if machine.run is not None]
        await asyncio.gather(*(self._stop_process(m, signal.SIGTERM, 10.0) for m in running))
        self._save()

    # Operations (the API layer validates bodies before calling these) --------------------------------------
    async def create(
        self, *, name: str | None, region: str, config: dict[str, Any], skip_launch: bool
    ) -> Machine:
        machine_id = new_machine_id()
        now = time.time()
        machine = Machine(
            id=machine_id,
            name=name or f"machine-{machine_id}",
            region=region,
            config=config,
            instance_id=new_version_id(),
            state=MachineState.CREATED,
            created_at=now,
            updated_at=now,
            private_ip=f"fdaa:0:1:a7b:{secrets.randbelow(0xFFFF):x}:{machine_id[:4]}:{machine_id[4:8]}:2",
        )
        machine.versions.append({"version": machine.instance_id, "user_config": config})
        self._machines[machine_id] = machine
        self._event(machine, "launch", "created", "user")
        async with machine.lock:
            if not skip_launch:
                await self._launch(machine, event="start", source="flyd")
            self._save()
        return machine

    async def start(self, machine: Machine) -> MachineState:
        async with machine.lock:
            previous = machine.state
            if previous not in (MachineState.CREATED, MachineState.STOPPED, MachineState.FAILED):
                raise MachineConflict(f"unable to start machine from current state: '{previous.value}'")
            await self._launch(machine, event="start", source="user")
            self._save()
            return previous

    async def stop(self, machine: Machine, signal_name: str | None, stop_timeout: object) -> None:
        """Ask the process to stop; returns at once, the machine reaches `stopped` when it has exited."""
        stop_config = machine.config.get("stop_config") or {}
        signum = signal.Signals[signal_name or stop_config.get("signal") or "SIGINT"]
        timeout_secs = parse_duration_secs(
            stop_timeout, parse_duration_secs(stop_config.get("timeout"), DEFAULT_STOP_TIMEOUT_SECS)
        )
        if machine.state not in RUNNING_STATES:
            raise MachineConflict(f"unable to stop machine from current state: '{machine.state.value}'")
        machine.wants_running = False
        self._spawn_task(self._stop_task(machine, signum, timeout_secs), name=f"stop-{machine.id}")

    async def _stop_task(self, machine: Machine, signum: signal.Signals, timeout_secs: float) -> None:
        async with machine.lock:
            if machine.state not in RUNNING_STATES:
                return
            self._set_state(machine, MachineState.STOPPING)
            self._event(machine, "stop", "stopping", "user")
            await self._stop_process(machine, signum, timeout_secs)
            self._set_state(machine, MachineState.STOPPED)
            self._save()

    async def update(self, machine: Machine, config: dict[str, Any], *, skip_launch: bool) -> None:
        """Apply a new config as a new version; a running machine is stopped and restarted with it."""
        async with machine.lock:
            machine.versions.append({"version": machine.instance_id, "user_config": machine.config})
            machine.config = config
            machine.instance_id = new_version_id()
            machine.wants_running = not skip_launch
            self._set_state(machine, MachineState.REPLACING)
            self._event(machine, "update", "replacing", "user")
            self._save()
        self._spawn_task(self._replace_task(machine, skip_launch), name=f"update-{machine.id}")

    async def _replace_task(self, machine: Machine, skip_launch: bool) -> None:
        async with machine.lock:
            if machine.state is not MachineState.REPLACING:
                return
            if machine.run is not None:
                stop_config = machine.config.get("stop_config") or {}
                signum = signal.Signals[stop_config.get("signal") or "SIGINT"]
                timeout_secs = parse_duration_secs(stop_config.get("timeout"), DEFAULT_STOP_TIMEOUT_SECS)
                await self._stop_process(machine, signum, timeout_secs)
            if skip_launch:
                self._set_state(machine, MachineState.STOPPED)
            else:
                await self._launch(machine, event="start", source="flyd")
            self._save()

    async def destroy(self, machine: Machine, *, force: bool) -> None:
        async with machine.lock:
            if machine.state in RUNNING_STATES and not force:
                raise MachineConflict(
                    "failed to destroy VM: unable to destroy machine, not currently stopped"
                )
            machine.wants_running = False
            self._set_state(machine, MachineState.DESTROYING)
            self._event(machine, "destroy", "destroying", "user")
            await self._stop_process(machine, signal.SIGKILL, 0.0)
            machine.lease = None
            self._set_state(machine, MachineState.DESTROYED)
            self._event(machine, "destroy", "destroyed", "flyd")
            self._save()

    async def wait(
        self, machine: Machine, states: frozenset[str], version: str | None, timeout_secs: float
    ) -> bool:
        """Wait until the machine (at `version`, when given) is in one of `states`; False on timeout."""
        deadline = time.monotonic() + timeout_secs
        while not self._reached(machine, states, version):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            changed = machine.changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
        return True

    @staticmethod
    def _reached(machine: Machine, states: frozenset[str], version: str | None) -> bool:
        if version is not None and version != machine.instance_id:
            # An older version has been replaced: it is as stopped as it will ever be.
            return bool(states & {"stopped", "destroyed", "settled"})
        if "settled" in states and machine.state in SETTLED_STATES:
            return True
        return machine.state.value in states

    # Processes -------------------------------------------------------------------------------------------
    async def _launch(self, machine: Machine, *, event: str, source: str) -> None:
        """Start the machine's process (caller holds the lock); `never_start` leaves it `starting`."""
        machine.wants_running = True
        self._set_state(machine, MachineState.STARTING)
        if self._faults.take(frozenset({FaultKind.NEVER_START}), machine.id, machine.config):
            logger.info("fault never_start machine_id=%s", machine.id)
            self._save()
            return
        await self._spawn_process(machine)
        self._set_state(machine, MachineState.STARTED)
        self._event(machine, event, "started", source)

    async def _spawn_process(self, machine: Machine) -> None:
        port = free_port()
        env = self._process_env(machine, port)
        command = ["-m", "worker"]
        if self._faults.take(frozenset({FaultKind.BROKEN_IMAGE}), machine.id, machine.config):
            # What an image whose entrypoint cannot run does: the process dies as it boots.
            logger.info("fault broken_image machine_id=%s image=%s", machine.id, machine.config.get("image"))
            command = ["-c", _BROKEN_IMAGE_ENTRYPOINT]
        self._logs_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path(machine.id).open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                self._python,
                *command,
                cwd=self._repo_root,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        run = Run(process, port, process_start_ticks(process.pid))
        machine.run = run
        self._save()
        cpus, memory_mb = guest_size(machine.config)
        pin_to_cpus(process.pid, cpus)
        self._spawn_task(self._supervise(machine, run), name=f"supervise-{machine.id}-{process.pid}")

        def record_oom(used_kb: int) -> None:
            run.oom_killed_at_kb = used_kb

        self._spawn_task(
            enforce_memory(process.pid, memory_mb, run.exited, self.log_path(machine.id), record_oom),
            name=f"memory-{machine.id}-{process.pid}",
        )
        logger.info("machine process started machine_id=%s pid=%d port=%d", machine.id, process.pid, port)

    def _process_env(self, machine: Machine, port: int) -> dict[str, str]:
        image = str(machine.config.get("image", ""))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(self._state_dir)),
            # A local machine can never reach the real exchange: unless its config says otherwise it
            # trades against the stack's simulator.
            "BINANCE_BASE_URL": f"http://127.0.0.1:{EXCHANGE_PORT}",
            **self._extra_env,
            **{str(key): str(value) for key, value in (machine.config.get("env") or {}).items()},
            # What the platform sets on every machine (the Machine runtime environment doc).
            "FLY_APP_NAME": self.app_name,
            "FLY_MACHINE_ID": machine.id,
            "FLY_REGION": machine.region,
            "FLY_IMAGE_REF": image,
            "FLY_MACHINE_VERSION": machine.instance_id,
            "FLY_PRIVATE_IP": machine.private_ip,
            "FLY_VM_MEMORY_MB": str(guest_size(machine.config)[1]),
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(port),
        }
        if self._unhealthy(machine):
            env["SUPABASE_URL"] = UNREACHABLE_URL
        return env

    def _unhealthy(self, machine: Machine) -> bool:
        """Whether the machine's current version runs unhealthy; an `unhealthy` fault's use is one version."""
        if machine.unhealthy_version == machine.instance_id:
            return True
        if self._faults.take(frozenset({FaultKind.UNHEALTHY}), machine.id, machine.config):
            logger.info("fault unhealthy machine_id=%s version=%s", machine.id, machine.instance_id)
            machine.unhealthy_version = machine.instance_id
            return True
        return False

    async def _supervise(self, machine: Machine, run: Run) -> None:
        """Wait for the process to exit; on an exit nobody asked for, apply the restart policy."""
        exit_code = await run.process.wait()
        run.exited.set()
        if machine.run is not run:
            return
        machine.run = None
        exit_event: dict[str, object] = {"exit_code": exit_code}
        if run.oom_killed_at_kb is not None:
            # As Fly reports a process the guest's OOM killer ended: SIGKILL, exit code 137.
            exit_code = 137
            exit_event = {"exit_code": 137, "guest_signal": 9, "oom_killed": True}
        self._event(machine, "exit", "stopped", "flyd", {"exit_event": exit_event})
        if not machine.wants_running:
            return  # a stop, update or destroy is handling it
        restart = machine.config.get("restart") or {}
        policy = restart.get("policy") or "on-failure"
        max_retries = restart.get("max_retries") or DEFAULT_ON_FAILURE_RETRIES
        now = time.monotonic()
        while machine.restarted_at and now - machine.restarted_at[0] > ON_FAILURE_WINDOW_SECS:
            machine.restarted_at.popleft()
        should_restart = policy == "always" or (
            policy == "on-failure" and exit_code != 0 and len(machine.restarted_at) < max_retries
        )
        logger.info(
            "machine process exited machine_id=%s exit_code=%s policy=%s restart=%s",
            machine.id,
            exit_code,
            policy,
            should_restart,
        )
        if not should_restart:
            self._set_state(machine, MachineState.STOPPED if exit_code == 0 else MachineState.FAILED)
            machine.wants_running = False
            self._save()
            return
        machine.restarts += 1
        machine.restarted_at.append(now)
        self._set_state(machine, MachineState.STARTING)
        async with machine.lock:
            relaunch = machine.wants_running and machine.run is None and machine.state in RUNNING_STATES
            if relaunch and not self._closing.is_set():
                await self._launch(machine, event="restart", source="flyd")
                self._save()

    async def _stop_process(self, machine: Machine, signum: signal.Signals, timeout_secs: float) -> None:
        run = machine.run
        if run is None:
            return
        machine.run = None
        with contextlib.suppress(ProcessLookupError):
            run.process.send_signal(signum)
        if timeout_secs > 0:
            try:
                await asyncio.wait_for(run.exited.wait(), timeout_secs)
            except TimeoutError:
                logger.warning("machine did not stop in %.0fs machine_id=%s", timeout_secs, machine.id)
        if not run.exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                run.process.kill()
            await run.exited.wait()
        self._event(machine, "exit", "stopped", "flyd", {"exit_event": {"exit_code": run.process.returncode}})

    # State and records ----------------------------------------------------------------------------------
    def _set_state(self, machine: Machine, state: MachineState) -> None:
        machine.state = state
        machine.updated_at = time.time()
        changed, machine.changed = machine.changed, asyncio.Event()
        changed.set()

    def _event(
        self, machine: Machine, kind: str, status: str, source: str, request: dict[str, Any] | None = None
    ) -> None:
        machine.events.append(
            {
                "id": new_version_id(),
                "type": kind,
                "status": status,
                "source": source,
                "timestamp": int(time.time() * 1000),
                "request": request or {},
            }
        )

    def _save(self) -> None:
        records = []
        for machine in self._machines.values():
            process = machine.run.process if machine.run is not None else None
            records.append(
                {
                    "id": machine.id,
                    "name": machine.name,
                    "region": machine.region,
                    "config": machine.config,
                    "instance_id": machine.instance_id,
                    "state": machine.state.value,
                    "created_at": machine.created_at,
                    "private_ip": machine.private_ip,
                    "versions": machine.versions[-5:],
                    "pid": process.pid if process is not None else None,
                    "start_ticks": machine.run.start_ticks if machine.run is not None else None,
                }
            )
        self._state_dir.mkdir(parents=True, exist_ok=True)
        path = self._state_dir / REGISTRY_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"app": self.app_name, "machines": records}))
        tmp.replace(path)


def _read_registry(state_dir: Path) -> list[dict[str, Any]]:
    try:
        records: list[dict[str, Any]] = json.loads((state_dir / REGISTRY_FILE).read_text())["machines"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return []
    return records


def recorded_processes(state_dir: Path) -> list[tuple[int, int]]:
    """(pid, start_ticks) of every worker process the registry file says is running and still is."""
    found = []
    for record in _read_registry(state_dir):
        pid, start_ticks = record.get("pid"), record.get("start_ticks")
        if isinstance(pid, int) and isinstance(start_ticks, int) and process_start_ticks(pid) == start_ticks:
            found.append((pid, start_ticks))
    return found


def stop_recorded_processes(state_dir: Path, timeout_secs: float = 10.0) -> int:
    """Stop the worker processes a (possibly crashed) stand-in left; returns how many were running."""
    processes = recorded_processes(state_dir)
    for pid, start_ticks in processes:
        _terminate(pid, start_ticks, timeout_secs)
    return len(processes)


def _terminate(pid: int, start_ticks: int, timeout_secs: float = 10.0) -> None:
    """SIGTERM, wait, SIGKILL: only while `pid` is still the process that was recorded."""
    still_ours: Callable[[], bool] = lambda: process_start_ticks(pid) == start_ticks  # noqa: E731
    if not still_ours():
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_secs
    while still_ours() and time.monotonic() < deadline:
        time.sleep(0.05)
    if still_ours():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
