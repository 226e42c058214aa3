"""The stand-in's HTTP server: the Machines API under `/v1`, a machine proxy, and `/_control` for tests.

- `/v1/apps/{app}/machines...`: create, list, get, update, start, stop, wait, delete, lease, events,
  versions. Bodies are validated against the OpenAPI spec; errors are Fly's `{"error": "..."}` with
  Fly's status codes (400 bad body, 401 token, 404 unknown, 408 wait timeout, 409 lease held,
  412 wrong state or version, 429 when a fault says so).
- `/_control/faults` (GET, POST `{"faults": [...]}`, DELETE), `/_control/machines/{id}` (pid, port,
  restarts, what the edge delivered to it) and `/_control/edge` (deliveries by routing) for tests.

Machines are reached only through the app's public edge (`devstack.fly.edge`, its own port), as from
outside Fly's private network.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from devstack.fly import spec
from devstack.fly.edge import Deliveries
from devstack.fly.faults import API_FAULTS, Fault, FaultBook, FaultError, FaultKind
from devstack.fly.machines import Fleet, Lease, Machine, MachineConflict, MachineState

logger = logging.getLogger(__name__)

MAX_WAIT_SECS = 60
DEFAULT_LEASE_TTL_SECS = 30
MAX_EVENTS = 50
NONCE_HEADER = "fly-machine-lease-nonce"
# Guest rules flyctl checks (internal/machine/update.go): shared CPUs and their memory range per CPU.
SHARED_CPUS = frozenset({1, 2, 4, 6, 8})

FLEET: web.AppKey[Fleet] = web.AppKey("fleet", Fleet)
FAULTS: web.AppKey[FaultBook] = web.AppKey("faults", FaultBook)
TOKEN: web.AppKey[str] = web.AppKey("token", str)
DELIVERIES: web.AppKey[Deliveries] = web.AppKey("deliveries", Deliveries)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FlyError(Exception):
    """An API error: Fly's body `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _fly_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"error": message},
        status=status,
        headers={"fly-request-id": secrets.token_hex(13), **(headers or {})},
    )


async def _json_body(request: web.Request, *, required: bool) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        if required:
            raise FlyError(400, "request body is required")
        return {}
    try:
        body = await request.json()
    except ValueError as error:
        raise FlyError(400, f"invalid JSON body: {error}") from None
    if not isinstance(body, dict):
        raise FlyError(400, "the body must be a JSON object")
    return body


def _validated_config(body: dict[str, Any], schema_name: str) -> dict[str, Any]:
    try:
        spec.validate(schema_name, body)
    except spec.SpecViolation as violation:
        raise FlyError(400, violation.message) from None
    config = body.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("image"), str) or not config["image"]:
        raise FlyError(400, "config.image is required")
    guest = config.get("guest") or {}
    cpus, memory_mb = guest.get("cpus", 1), guest.get("memory_mb", 256)
    if guest.get("cpu_kind", "shared") == "shared":
        if cpus not in SHARED_CPUS:
            raise FlyError(400, f"invalid number of CPUs for shared guest: {cpus}; valid: 1, 2, 4, 6, 8")
        if memory_mb % 256 or not 256 * cpus <= memory_mb <= 2048 * cpus:
            raise FlyError(
                400,
                f"invalid memory size {memory_mb} MB for {cpus} shared CPU(s): must be a multiple of 256 "
                f"between {256 * cpus} and {2048 * cpus}",
            )
    return config


def _machine(request: web.Request) -> Machine:
    machine = request.app[FLEET].get(request.match_info["machine_id"])
    if machine is None:
        raise FlyError(404, "machine not found")
    return machine


def _live_machine(request: web.Request) -> Machine:
    machine = _machine(request)
    if machine.state is MachineState.DESTROYED:
        raise FlyError(404, "machine not found")
    return machine


def _check_lease(request: web.Request, machine: Machine) -> None:
    """409 unless the machine is unleased or the caller presents the lease's nonce."""
    lease = machine.lease
    if lease is None or not lease.active():
        return
    if not hmac.compare_digest(request.headers.get(NONCE_HEADER, ""), lease.nonce):
        raise FlyError(
            409,
            f"lease currently held by {lease.owner}, expires at "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(lease.expires_at))}",
        )


def _take_lease(machine: Machine, ttl_secs: int, description: str) -> Lease:
    lease = Lease(
        nonce=secrets.token_hex(6),
        owner="operator@trademind.local",
        description=description,
        expires_at=time.time() + ttl_secs,
        version=machine.instance_id,
    )
    machine.lease = lease
    return lease


# Middleware ---------------------------------------------------------------------------------------------
@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Token check, API faults and FlyError -> Fly's error body, for `/v1` routes only."""
    if not request.path.startswith("/v1/"):
        return await handler(request)
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() not in {"bearer", "flyv1"} or not hmac.compare_digest(
        token.strip().encode(), request.app[TOKEN].encode()
    ):
        return _fly_error(401, "You must be authenticated to view this.")
    try:
        fault = await _api_fault(request)
        if fault is not None and fault.kind is FaultKind.RATE_LIMIT:
            return _fly_error(429, "rate limit exceeded", {"Retry-After": "1"})
        if fault is not None and fault.kind is FaultKind.SLOW_API:
            await asyncio.sleep(fault.delay_ms / 1000)
        app_name = request.match_info.get("app_name")
        if app_name is not None and app_name != request.app[FLEET].app_name:
            raise FlyError(404, f'Could not find App "{app_name}"')
        return await handler(request)
    except FlyError as error:
        return _fly_error(error.status, error.message, error.headers)


async def _api_fault(request: web.Request) -> Fault | None:
    machine_id = request.match_info.get("machine_id")
    machine = request.app[FLEET].get(machine_id) if machine_id else None
    config = machine.config if machine is not None else None
    if config is None and request.method == "POST" and request.can_read_body:
        try:
            body = await request.json()
            config = body.get("config") if isinstance(body, dict) else None
        except ValueError:
            config = None
    return request.app[FAULTS].take(API_FAULTS, machine_id, config if isinstance(config, dict) else None)


# Machines API ---------------------------------------------------------------------------------------------
async def list_machines(request: web.Request) -> web.Response:
    include_deleted = request.query.get("include_deleted") == "true"
    summary = request.query.get("summary") == "true"
    region = request.query.get("region")
    states = {s for s in request.query.get("state", "").split(",") if s}
    machines = [
        machine.as_json(summary=summary)
        for machine in request.app[FLEET].all()
        if (include_deleted or machine.state is not MachineState.DESTROYED)
        and (region is None or machine.region == region)
        and (not states or machine.state.value in states)
    ]
    return web.json_response(machines)


async def create_machine(request: web.Request) -> web.Response:
    body = await _json_body(request, required=True)
    config = _validated_config(body, "CreateMachineRequest")
    machine = await request.app[FLEET].create(
        name=body.get("name"),
        region=body.get("region") or "iad",
        config=config,
        skip_launch=bool(body.get("skip_launch")),
    )
    nonce = None
    if body.get("lease_ttl"):
        nonce = _take_lease(machine, int(body["lease_ttl"]), "lease taken at create").nonce
    return web.json_response(machine.as_json(nonce=nonce))


async def show_machine(request: web.Request) -> web.Response:
    return web.json_response(_machine(request).as_json())


async def update_machine(request: web.Request) -> web.Response:
    machine = _live_machine(request)
    body = await _json_body(request, required=True)
    config = _validated_config(body, "UpdateMachineRequest")
    _check_lease(request, machine)
    if body.get("current_version") and body["current_version"] != machine.instance_id:
        raise FlyError(412, f"machine version mismatch: current version is {machine.instance_id}")
    if body.get("region") and body["region"] != machine.region:
        raise FlyError(400, "a machine's region cannot be changed by an update")
    if machine.state in (MachineState.DESTROYING, MachineState.REPLACING):
        raise FlyError(412, f"unable to update machine from current state: '{machine.state.value}'")
    await request.app[FLEET].update(machine, config, skip_launch=bool(body.get("skip_launch")))
    nonce = None
    if body.get("lease_ttl"):
        nonce = _take_lease(machine, int(body["lease_ttl"]), "lease taken at update").nonce
    return web.json_response(machine.as_json(nonce=nonce))


async def start_machine(request: web.Request) -> web.Response:
    machine = _live_machine(request)
    _check_lease(request, machine)
    try:
        previous = await request.app[FLEET].start(machine)
    except MachineConflict as conflict:
        raise FlyError(412, str(conflict)) from None
    return web.json_response({"previous_state": previous.value, "migrated": False, "new_host": ""})


async def stop_machine(request: web.Request) -> web.Response:
    machine = _live_machine(request)
    body = await _json_body(request, required=False)
    try:
        spec.validate("StopRequest", body)
    except spec.SpecViolation as violation:
        raise FlyError(400, violation.message) from None
    _check_lease(request, machine)
    try:
        await request.app[FLEET].stop(machine, body.get("signal"), body.get("timeout"))
    except MachineConflict as conflict:
        raise FlyError(412, str(conflict)) from None
    except ValueError as error:
        raise FlyError(400, str(error)) from None
    return web.json_response({"ok": True})


async def delete_machine(request: web.Request) -> web.Response:
    machine = _live_machine(request)
    _check_lease(request, machine)
    force = request.query.get("force") == "true" or request.query.get("kill") == "true"
    try:
        await request.app[FLEET].destroy(machine, force=force)
    except MachineConflict as conflict:
        raise FlyError(412, str(conflict)) from None
    return web.json_response({"ok": True})


_WAIT_STATES = frozenset(spec.query_enum("/apps/{app_name}/machines/{machine_id}/wait", "get", "state"))


async def wait_machine(request: web.Request) -> web.Response:
    machine = _machine(request)
    states = frozenset(
        state for value in request.query.getall("state", ["started"]) for state in value.split(",") if state
    )
    if not states or not states <= _WAIT_STATES:
        raise FlyError(400, f"invalid state(s) {sorted(states)}; valid: {', '.join(sorted(_WAIT_STATES))}")
    raw_timeout = request.query.get("timeout", str(MAX_WAIT_SECS))
    try:
        timeout_secs = int(raw_timeout)
    except ValueError:
        raise FlyError(400, f"invalid timeout {raw_timeout!r}: must be whole seconds") from None
    if timeout_secs < 1:
        raise FlyError(400, "timeout must be at least 1 second")
    timeout_secs = min(timeout_secs, MAX_WAIT_SECS)
    version = request.query.get("version") or request.query.get("instance_id")
    known_versions = {machine.instance_id} | {v["version"] for v in machine.versions}
    if version is not None and version not in known_versions:
        raise FlyError(400, f"unknown machine version {version}")
    reached = await request.app[FLEET].wait(machine, states, version, timeout_secs)
    if not reached:
        wanted = ", ".join(sorted(states))
        raise FlyError(
            408,
            f"deadline_exceeded: machine failed to reach desired state, {wanted}, "
            f"currently {machine.state.value}",
        )
    state = machine.state.value if version in (None, machine.instance_id) else "stopped"
    event_id = machine.events[-1]["id"] if machine.events else ""
    return web.json_response(
        {"ok": True, "state": state, "version": version or machine.instance_id, "event_id": event_id}
    )


async def list_events(request: web.Request) -> web.Response:
    machine = _machine(request)
    try:
        limit = min(int(request.query.get("limit", "20")), MAX_EVENTS)
    except ValueError:
        raise FlyError(400, "limit must be an integer") from None
    return web.json_response(list(reversed(machine.events))[:limit])


async def list_versions(request: web.Request) -> web.Response:
    machine = _machine(request)
    current = {"version": machine.instance_id, "user_config": machine.config}
    return web.json_response([current, *reversed(machine.versions)])


def _lease_envelope(lease: Lease) -> dict[str, Any]:
    return {"status": "success", "data": lease.as_json()}


async def create_lease(request: web.Request) -> web.Response:
    machine = _live_machine(request)
    body = await _json_body(request, required=False)
    try:
        spec.validate("CreateLeaseRequest", body)
    except spec.SpecViolation as violation:
        raise FlyError(400, violation.message) from None
    # fly-go sends ?ttl=N and no body; the spec and docs put ttl in the body.
    raw_ttl = body.get("ttl") or request.query.get("ttl") or DEFAULT_LEASE_TTL_SECS
    try:
        ttl_secs = int(raw_ttl)
    except ValueError:
        raise FlyError(400, "ttl must be an integer number of seconds") from None
    if not 1 <= ttl_secs <= 3600:
        raise FlyError(400, "ttl must be between 1 and 3600 seconds")
    current = machine.lease
    presented = request.headers.get(NONCE_HEADER)
    if current is not None and current.active():
        if presented is None or not hmac.compare_digest(presented, current.nonce):
            _check_lease(request, machine)  # raises 409
        current.expires_at = time.time() + ttl_secs  # refresh
        return web.json_response(_lease_envelope(current), status=201)
    lease = _take_lease(machine, ttl_secs, str(body.get("description", "")))
    return web.json_response(_lease_envelope(lease), status=201)


async def show_lease(request: web.Request) -> web.Response:
    machine = _live_machine(request)
    if machine.lease is None or not machine.lease.active():
        raise FlyError(404, "lease not found")
    return web.json_response(_lease_envelope(machine.lease))


async def release_lease(request: web.Request) -> web.Response:
    machine = _live_machine(request)
    lease = machine.lease
    if lease is None or not lease.active():
        raise FlyError(404, "lease not found")
    _check_lease(request, machine)
    if NONCE_HEADER not in request.headers:
        raise FlyError(400, f"the {NONCE_HEADER} header is required")
    machine.lease = None
    return web.json_response({"ok": True})


# Control (tests only) ----------------------------------------------------------------------------------
async def add_faults(request: web.Request) -> web.Response:
    body = await request.json()
    raw_faults = body.get("faults") if isinstance(body, dict) else None
    if not isinstance(raw_faults, list) or not raw_faults:
        return web.json_response({"error": 'expected {"faults": [{"kind": ...}, ...]}'}, status=400)
    try:
        faults = [Fault.parse(raw) for raw in raw_faults]
    except FaultError as error:
        return web.json_response({"error": str(error)}, status=400)
    request.app[FAULTS].add(faults)
    return web.json_response({"faults": request.app[FAULTS].listing()})


async def list_faults(request: web.Request) -> web.Response:
    return web.json_response({"faults": request.app[FAULTS].listing()})


async def clear_faults(request: web.Request) -> web.Response:
    return web.json_response({"cleared": request.app[FAULTS].clear()})


async def control_machine(request: web.Request) -> web.Response:
    machine = request.app[FLEET].get(request.match_info["machine_id"])
    if machine is None:
        return web.json_response({"error": "machine not found"}, status=404)
    run = machine.run
    return web.json_response(
        {
            "id": machine.id,
            "state": machine.state.value,
            "pid": run.process.pid if run is not None else None,
            "httpPort": run.http_port if run is not None else None,
            "restarts": machine.restarts,
            "logPath": str(request.app[FLEET].log_path(machine.id)),
            "edgeDeliveries": request.app[DELIVERIES].of(machine.id),
        }
    )


async def control_edge(request: web.Request) -> web.Response:
    deliveries = request.app[DELIVERIES]
    return web.json_response({"forced": deliveries.forced, "balanced": deliveries.balanced})


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(fleet: Fleet, faults: FaultBook, token: str, deliveries: Deliveries) -> web.Application:
    """The Machines API application around `fleet` (whose TaskGroup the caller owns)."""
    app = web.Application(middlewares=[api_middleware], client_max_size=1024 * 1024)
    app[FLEET] = fleet
    app[FAULTS] = faults
    app[TOKEN] = token
    app[DELIVERIES] = deliveries
    machines = "/v1/apps/{app_name}/machines"
    machine = machines + "/{machine_id}"
    app.router.add_get(machines, list_machines)
    app.router.add_post(machines, create_machine)
    app.router.add_get(machine, show_machine)
    app.router.add_post(machine, update_machine)
    app.router.add_delete(machine, delete_machine)
    app.router.add_post(machine + "/start", start_machine)
    app.router.add_post(machine + "/stop", stop_machine)
    app.router.add_get(machine + "/wait", wait_machine)
    app.router.add_get(machine + "/events", list_events)
    app.router.add_get(machine + "/versions", list_versions)
    app.router.add_post(machine + "/lease", create_lease)
    app.router.add_get(machine + "/lease", show_lease)
    app.router.add_delete(machine + "/lease", release_lease)
    app.router.add_get("/_control/faults", list_faults)
    app.router.add_post("/_control/faults", add_faults)
    app.router.add_delete("/_control/faults", clear_faults)
    app.router.add_get("/_control/machines/{machine_id}", control_machine)
    app.router.add_get("/_control/edge", control_edge)
    app.router.add_get("/_control/health", health)
    return app
