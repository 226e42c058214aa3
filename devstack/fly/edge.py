"""The app's public edge, as Fly Proxy routes it: `https://<app>.fly.dev` standing on its own local port.

A request reaches a machine only through a service in the machine's config: a `services` entry whose `ports`
include the edge's public port (443) with the `http` handler; it is forwarded to that service's
`internal_port` on the machine. Fly's documented routing (networking/dynamic-request-routing):
- `fly-force-instance-id: <machine id>` goes to that machine only. The proxy tries again while the machine
  is not ready, and there is no fallback when it stays unavailable.
- Without the header the proxy load-balances over the started machines that have the service.
- A stopped machine is started first only when its service has `autostart: true`.
When no machine can take the request Fly's proxy answers an error of its own (502, no body) and writes the
reason to the app's log stream with a code (PR01 no healthy machines, PR02 machine not found, PR04 no
candidate after retries, PM08 non-startable state, PC01 refused on the port); the stand-in logs the same.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from devstack.fly.machines import Fleet, Machine, MachineConflict, MachineState

logger = logging.getLogger(__name__)

# The public port the local edge stands for (TLS terminated at Fly's edge, HTTP to the machine).
PUBLIC_PORT = 443
# The worker listens where the image's HTTP_PORT says (8080 in the Dockerfile) unless the config sets it.
DEFAULT_GUEST_HTTP_PORT = 8080
# How long the proxy keeps trying a machine that is not ready (Fly retries up to 90 times, PR03), and how
# long it gives a machine it started itself to take the request (PM03 is its wake timeout).
RETRY_WINDOW_SECS = 5.0
WAKE_WINDOW_SECS = 30.0
RETRY_PAUSE_SECS = 0.1
FORWARD_TIMEOUT_SECS = 60.0
FORCE_INSTANCE_HEADER = "fly-force-instance-id"
# Not forwarded: hop-by-hop headers and what the proxy itself sets.
_DROPPED_HEADERS = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}
)
DELIVERIES_KEPT = 50


@dataclass(frozen=True, slots=True)
class Delivery:
    """One request the edge handed to a machine."""

    machine_id: str
    method: str
    path: str
    forced: bool
    status: int

    def as_json(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "forced": self.forced, "status": self.status}


class Deliveries:
    """What the edge delivered, per machine (the last few) and in total, for tests to check routing."""

    def __init__(self) -> None:
        self._by_machine: dict[str, deque[Delivery]] = {}
        self.forced = 0
        self.balanced = 0

    def record(self, delivery: Delivery) -> None:
        self._by_machine.setdefault(delivery.machine_id, deque(maxlen=DELIVERIES_KEPT)).append(delivery)
        if delivery.forced:
            self.forced += 1
        else:
            self.balanced += 1

    def of(self, machine_id: str) -> list[dict[str, Any]]:
        return [delivery.as_json() for delivery in self._by_machine.get(machine_id, ())]


FLEET: web.AppKey[Fleet] = web.AppKey("edge_fleet", Fleet)
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("edge_session", aiohttp.ClientSession)
DELIVERIES: web.AppKey[Deliveries] = web.AppKey("edge_deliveries", Deliveries)


class NoCandidate(Exception):
    """No machine can take the request; `code` is Fly's proxy error code for the log line."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"[{code}] {reason}")
        self.code = code


def http_service(machine: Machine) -> dict[str, Any] | None:
    """The machine's service that takes HTTP on the public port, if it has one."""
    for service in machine.config.get("services") or []:
        if service.get("protocol", "tcp") != "tcp":
            continue
        for port in service.get("ports") or []:
            if port.get("port") == PUBLIC_PORT and "http" in (port.get("handlers") or []):
                return dict(service)
    return None


def guest_http_port(machine: Machine) -> int:
    """The port the machine's worker listens on inside the machine."""
    return int((machine.config.get("env") or {}).get("HTTP_PORT", DEFAULT_GUEST_HTTP_PORT))


@dataclass(slots=True)
class Target:
    """The machine a request goes to, the service that takes it, and until when the proxy keeps trying."""

    machine: Machine
    service: dict[str, Any]
    deadline: float


async def _pinned_target(fleet: Fleet, machine_id: str) -> Target:
    machine = fleet.get(machine_id)
    if machine is None or machine.state is MachineState.DESTROYED:
        raise NoCandidate("PR02", f"machine {machine_id} not found")
    service = http_service(machine)
    if service is None:
        raise NoCandidate("PR04", f"machine {machine_id} has no service on port {PUBLIC_PORT}")
    deadline = time.monotonic() + RETRY_WINDOW_SECS
    while machine.state is not MachineState.STARTED or machine.http_port is None:
        if machine.state in (MachineState.STOPPED, MachineState.CREATED) and service.get("autostart") is True:
            try:
                await fleet.start(machine)
            except MachineConflict as conflict:
                raise NoCandidate("PM08", str(conflict)) from None
            deadline = time.monotonic() + WAKE_WINDOW_SECS
        if machine.state in (MachineState.DESTROYING, MachineState.DESTROYED):
            raise NoCandidate("PM08", f"machine {machine_id} is {machine.state.value}")
        if time.monotonic() >= deadline:
            raise NoCandidate(
                "PR04", f"could not reach machine {machine_id} (state {machine.state.value}) after retries"
            )
        await asyncio.sleep(RETRY_PAUSE_SECS)
    return Target(machine, service, max(deadline, time.monotonic() + RETRY_WINDOW_SECS))


def _balanced_target(fleet: Fleet) -> Target:
    candidates = [
        Target(machine, service, time.monotonic() + RETRY_WINDOW_SECS)
        for machine in fleet.all()
        if machine.state is MachineState.STARTED
        and machine.http_port is not None
        and (service := http_service(machine)) is not None
    ]
    if not candidates:
        raise NoCandidate("PR01", "no healthy machines to route to")
    return random.choice(candidates)  # noqa: S311 (load balancing, not security)


async def _forward(request: web.Request, session: aiohttp.ClientSession, target: Target) -> web.Response:
    machine, service = target.machine, target.service
    if service.get("internal_port") != guest_http_port(machine):
        port = service.get("internal_port")
        raise NoCandidate("PC01", f"machine {machine.id} refused connection on port {port}")
    headers = {name: value for name, value in request.headers.items() if name.lower() not in _DROPPED_HEADERS}
    headers |= {
        "Fly-Forwarded-Port": str(PUBLIC_PORT),
        "X-Forwarded-Proto": "https",
        "Fly-Region": machine.region,
        "Fly-Request-Id": request["fly_request_id"],
    }
    body = await request.read()
    while True:
        port = machine.http_port
        try:
            if port is None:
                raise ConnectionRefusedError("machine is not running")
            async with session.request(
                request.method,
                f"http://127.0.0.1:{port}{request.rel_url}",
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_SECS),
            ) as upstream:
                content = await upstream.read()
                response_headers = {"fly-request-id": request["fly_request_id"], "server": "Fly/devstack"}
                if content_type := upstream.headers.get("Content-Type"):
                    response_headers["Content-Type"] = content_type
                return web.Response(body=content, status=upstream.status, headers=response_headers)
        except (aiohttp.ClientConnectorError, ConnectionRefusedError) as error:
            # Nothing was sent (a booting worker may not listen yet): the proxy tries again within its window.
            if time.monotonic() >= target.deadline:
                reason = f"machine {machine.id}: connection retries exhausted ({error})"
                raise NoCandidate("PC07", reason) from None
            await asyncio.sleep(RETRY_PAUSE_SECS)
        except aiohttp.ClientError as error:
            # The request may have reached the worker: never sent twice.
            raise NoCandidate("PU02", f"machine {machine.id}: request not completed ({error})") from None
        except TimeoutError:
            raise NoCandidate("PC05", f"machine {machine.id}: connection timed out") from None


async def route(request: web.Request) -> web.StreamResponse:
    """Deliver the request to the machine the header pins, or to any started machine with the service."""
    fleet = request.app[FLEET]
    request["fly_request_id"] = secrets.token_hex(13)
    pinned = request.headers.get(FORCE_INSTANCE_HEADER, "").strip()
    try:
        target = await _pinned_target(fleet, pinned) if pinned else _balanced_target(fleet)
        response = await _forward(request, request.app[SESSION], target)
    except NoCandidate as failure:
        logger.warning("proxy error %s request_id=%s", failure, request["fly_request_id"])
        headers = {"fly-request-id": request["fly_request_id"], "server": "Fly/devstack"}
        return web.Response(status=502, headers=headers)
    request.app[DELIVERIES].record(
        Delivery(target.machine.id, request.method, request.path, bool(pinned), response.status)
    )
    return response


def create_edge_app(fleet: Fleet, deliveries: Deliveries) -> web.Application:
    """The edge application: every path on every method is routed to a machine."""
    app = web.Application(client_max_size=10 * 1024 * 1024)
    app[FLEET] = fleet
    app[DELIVERIES] = deliveries

    async def client_session(app: web.Application) -> Any:
        async with aiohttp.ClientSession() as session:
            app[SESSION] = session
            yield

    app.cleanup_ctx.append(client_session)
    app.router.add_route("*", "/{tail:.*}", route)
    return app
