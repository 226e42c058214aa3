"""The machine's HTTP API (port 8080): health, metrics, live positions, lifecycle hooks (POST, bearer).

HTTP/1.1 is h11's (the sans-IO protocol library httpx's own transport runs on, so the worker has it loaded
already) over an asyncio server: aiohttp's server cost ~100 ms of CPU in imports on the way to /health (its
client's two CA bundle loads among them), for nine routes that need none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import h11

from worker.components import HEALTHY_STATES, ComponentState, ShutdownReport
from worker.metrics import WorkerMetrics, resident_memory_mb

logger = logging.getLogger(__name__)


class ShutdownReason(StrEnum):
    SUBSCRIPTION_CANCELLED = "subscription_cancelled"
    USER_REQUEST = "user_request"
    INACTIVITY = "inactivity"
    UPDATE = "update"
    OPERATOR = "operator"


class WorkerControl(Protocol):
    """What the API needs from the app (implemented by WorkerApp)."""

    version: str
    machine_id: str
    metrics: WorkerMetrics

    def uptime_secs(self) -> float: ...
    def component_states(self) -> dict[str, ComponentState]: ...
    def open_positions(self) -> list[dict[str, Any]]: ...
    def market_state(self) -> dict[str, Any]: ...
    async def reload_traders(self) -> int: ...
    async def prepare_shutdown(self) -> ShutdownReport: ...
    def request_shutdown(self, reason: str) -> None: ...


# A kept-alive connection with no request for this long is closed (aiohttp's keepalive_timeout), as is one
# whose request does not arrive in full within it.
IDLE_TIMEOUT_SECS = 75.0
MAX_BODY_BYTES = 64 * 1024  # the largest body a route reads is {"reason": ...}
MAX_HEADER_BYTES = 16 * 1024
CLOSE_TIMEOUT_SECS = 10.0  # how long close() lets a request in progress finish its response


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query string
    headers: Mapping[str, str]  # names lower-cased
    body: bytes


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def json_response(body: object, status: int = 200) -> Response:
    return Response(status, json.dumps(body).encode())


def _error(status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(
        status, json.dumps({"error": {"code": code, "message": message}}).encode(), headers=headers
    )


Handler = Callable[[Request], Awaitable[Response]]


def _load_json(metrics: WorkerMetrics) -> dict[str, object]:
    """What scale-machines sizes the machine by (CPU is averaged since the previous /metrics call)."""
    reading = metrics.process.read()
    return {
        "sweepLoadRatio": round(metrics.sweeps.peak_ratio(), 4),
        "sweepsMissed": metrics.sweeps.missed,
        "cpuPercent": round(reading.cpu_percent, 1),
        "cpuCount": reading.cpu_count,
        "memoryMb": round(reading.memory_mb, 1),
        "memoryLimitMb": metrics.memory_limit_mb,
        "predictedSweepLoadRatio": (
            round(metrics.predicted_sweep_ratio, 4) if metrics.predicted_sweep_ratio is not None else None
        ),
    }


def build_api(control: WorkerControl, api_secret: str) -> HttpApi:
    """The API's routes; POST routes require `Authorization: Bearer <api_secret>`."""

    async def health(_: Request) -> Response:
        states = control.component_states()
        healthy = all(state in HEALTHY_STATES for state in states.values())
        metrics = control.metrics
        body = {
            "status": "healthy" if healthy else "degraded",
            "version": control.version,
            "machineId": control.machine_id,
            "uptime": round(control.uptime_secs(), 3),
            "startupSecs": metrics.startup_secs,
            "startupCpuSecs": metrics.startup_cpu_secs,
            "activeTraders": metrics.active_traders,
            "openPositions": metrics.open_positions,
            "websocketConnected": metrics.websocket_status == "connected",
            "components": {name: state.value for name, state in states.items()},
        }
        return json_response(body, status=200 if healthy else 503)

    async def metrics_json(_: Request) -> Response:
        metrics = control.metrics
        return json_response(
            {
                "load": _load_json(metrics),
                "activeTraders": metrics.active_traders,
                "signalsChecked1h": metrics.signals_checked.last_hour(),
                "signalsTriggered1h": metrics.signals_triggered.last_hour(),
                "openPositions": metrics.open_positions,
                "watchingSignals": metrics.watching_signals,
                "memoryUsageMB": round(resident_memory_mb(), 1),
                "websocketStatus": metrics.websocket_status,
                "lastKlineUpdate": (
                    metrics.last_kline_update.isoformat().replace("+00:00", "Z")
                    if metrics.last_kline_update
                    else None
                ),
            }
        )

    async def metrics_prometheus(_: Request) -> Response:
        metrics = control.metrics
        labels = f'machine_id="{control.machine_id}",version="{control.version}"'
        gauges = [
            ("trademind_active_traders", "Traders scheduled on this machine.", metrics.active_traders),
            ("trademind_open_positions", "Open positions.", metrics.open_positions),
            ("trademind_watching_signals", "Signals being watched.", metrics.watching_signals),
            ("trademind_signals_checked_1h", "Signal checks in the last hour.",
             metrics.signals_checked.last_hour()),
            ("trademind_signals_triggered_1h", "Signals triggered in the last hour.",
             metrics.signals_triggered.last_hour()),
            ("trademind_memory_rss_bytes", "Resident memory.", int(resident_memory_mb() * 1024 * 1024)),
            ("trademind_uptime_seconds", "Seconds since start.", round(control.uptime_secs(), 3)),
            ("trademind_websocket_connected", "1 when the market feed is connected.",
             int(metrics.websocket_status == "connected")),
        ]  # fmt: skip
        lines = []
        for name, help_text, value in gauges:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{{{labels}}} {value}"]
        per_trader = [
            ("trademind_trader_checks_total", "check_signal calls per trader.", "counter", "checks"),
            ("trademind_trader_matches_total", "Signal code matches per trader.", "counter", "matches"),
            ("trademind_trader_errors_total", "Check errors per trader.", "counter", "errors"),
            ("trademind_trader_stale_symbols_total", "Symbols skipped as stale.", "counter", "stale_symbols"),
            ("trademind_trader_last_run_duration_ms", "Last run.", "gauge", "last_run_duration_ms"),
        ]  # fmt: skip
        for name, help_text, kind, attribute in per_trader if metrics.traders else ():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            for trader_id, figures in sorted(metrics.traders.items()):
                value = getattr(figures, attribute)
                if value is not None:
                    lines.append(f'{name}{{{labels},trader_id="{trader_id}"}} {value}')
        for component, state in control.component_states().items():
            healthy = int(state in HEALTHY_STATES)
            lines.append(f'trademind_component_healthy{{{labels},component="{component}"}} {healthy}')
        return Response(200, ("\n".join(lines) + "\n").encode(), "text/plain; charset=utf-8")

    async def trader_metrics(_: Request) -> Response:
        figures = control.metrics.traders
        return json_response(
            {"traders": {trader_id: figures[trader_id].as_json() for trader_id in sorted(figures)}}
        )

    async def positions(_: Request) -> Response:
        return json_response({"positions": control.open_positions()})

    async def market(_: Request) -> Response:
        return json_response(control.market_state())

    async def reload_traders(_: Request) -> Response:
        return json_response({"success": True, "tradersLoaded": await control.reload_traders()})

    async def prepare_shutdown(_: Request) -> Response:
        report = await control.prepare_shutdown()
        return json_response(
            {
                "success": True,
                "openPositions": report.open_positions,
                "watchingSignals": report.watching_signals,
                "components": report.components,
            }
        )

    async def shutdown(request: Request) -> Response:
        try:
            body = json.loads(request.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "invalid_json", 'the body must be JSON like {"reason": "user_request"}')
        reason = body.get("reason") if isinstance(body, dict) else None
        if reason not in set(ShutdownReason):
            allowed = ", ".join(ShutdownReason)
            return _error(400, "invalid_reason", f"'reason' must be one of: {allowed}")
        report = await control.prepare_shutdown()
        control.request_shutdown(reason)
        return json_response(
            {
                "success": True,
                "message": "Machine shutting down gracefully",
                "openPositions": report.open_positions,
                "watchingSignals": report.watching_signals,
            }
        )

    return HttpApi(
        {
            ("GET", "/health"): health,
            ("GET", "/metrics"): metrics_json,
            ("GET", "/metrics/prometheus"): metrics_prometheus,
            ("GET", "/metrics/traders"): trader_metrics,
            ("GET", "/metrics/market"): market,
            ("GET", "/positions"): positions,
            ("POST", "/reload-traders"): reload_traders,
            ("POST", "/prepare-shutdown"): prepare_shutdown,
            ("POST", "/shutdown"): shutdown,
        },
        api_secret,
    )


@dataclass(eq=False)
class _Connection:
    writer: asyncio.StreamWriter
    task: asyncio.Task[None]  # the server's task serving it
    busy: bool = False  # from a request's first byte to the end of its response


class HttpApi:
    """Routes by (method, path), served from `start` to `close`; HEAD is answered for every GET route."""

    def __init__(self, routes: Mapping[tuple[str, str], Handler], api_secret: str) -> None:
        self._routes = routes
        self._api_secret = api_secret
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._closing = False

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)

    async def close(self) -> None:
        """Stop listening, close idle connections, and let a request in progress finish its response."""
        self._closing = True
        if self._server is None:
            return
        self._server.close()
        for connection in self._connections:
            if not connection.busy:
                connection.writer.close()
        if self._connections:
            await asyncio.wait(
                {connection.task for connection in self._connections}, timeout=CLOSE_TIMEOUT_SECS
            )
        for connection in list(self._connections):
            connection.writer.close()
        await self._server.wait_closed()

    async def respond(self, request: Request) -> Response:
        """The route's answer to `request`, or the error that says why it has none."""
        method = "GET" if request.method == "HEAD" else request.method
        handler = self._routes.get((method, request.path))
        if handler is None:
            allowed = sorted(m for m, path in self._routes if path == request.path)
            if not allowed:
                return _error(404, "not_found", f"no endpoint {request.path}")
            return _error(
                405, "method_not_allowed", f"{request.path} takes {', '.join(allowed)}",
                headers=(("Allow", ", ".join(allowed)),),
            )  # fmt: skip
        if method == "POST":
            presented = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not presented:
                return _error(
                    401, "missing_authorization", "POST endpoints need 'Authorization: Bearer <secret>'"
                )
            if not hmac.compare_digest(presented.encode(), self._api_secret.encode()):
                return _error(403, "invalid_secret", "the bearer secret is not this machine's")
        try:
            return await handler(request)
        except Exception:
            logger.exception("http api %s %s failed", request.method, request.path)
            return _error(500, "internal_error", "the worker could not answer; see its log")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # asyncio.start_server runs each connection in its own task
        connection = _Connection(writer, task)
        self._connections.add(connection)
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            while not self._closing:
                try:
                    request = await self._read_request(http, reader, connection)
                except h11.RemoteProtocolError as error:
                    if http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                        status = error.error_status_hint
                        await self._send(http, writer, "GET", _error(status, "bad_request", str(error)))
                    break
                except _BodyTooLarge:
                    too_large = f"the body is over {MAX_BODY_BYTES} bytes"
                    await self._send(http, writer, "POST", _error(413, "body_too_large", too_large))
                    break
                if request is None:
                    break
                await self._send(http, writer, request.method, await self.respond(request))
                connection.busy = False
                if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
                    break  # the client asked to close, or h11 cannot reuse the connection
                http.start_next_cycle()
        except (ConnectionError, TimeoutError, h11.LocalProtocolError):
            pass  # the client went away or stalled; nothing is left to answer
        finally:
            self._connections.discard(connection)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @staticmethod
    async def _read_request(
        http: h11.Connection, reader: asyncio.StreamReader, connection: _Connection
    ) -> Request | None:
        """The next request in full; None once the client closed the connection between requests."""
        head: h11.Request | None = None
        body = bytearray()
        async with asyncio.timeout(IDLE_TIMEOUT_SECS):
            while True:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    connection.busy = head is not None or bool(data)
                    http.receive_data(data)  # b"" is the end of the stream
                elif isinstance(event, h11.Request):
                    head = event
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_BODY_BYTES:
                        raise _BodyTooLarge
                elif isinstance(event, h11.EndOfMessage) and head is not None:
                    target = head.target.decode("ascii", errors="replace")
                    return Request(
                        method=head.method.decode("ascii", errors="replace"),
                        path=target.partition("?")[0],
                        headers={
                            name.decode("latin-1"): value.decode("latin-1") for name, value in head.headers
                        },
                        body=bytes(body),
                    )
                elif isinstance(event, h11.ConnectionClosed):
                    return None

    @staticmethod
    async def _send(
        http: h11.Connection, writer: asyncio.StreamWriter, method: str, response: Response
    ) -> None:
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            *response.headers,
        ]
        writer.write(http.send(h11.Response(status_code=response.status, headers=headers)))
        if method != "HEAD":
            writer.write(http.send(h11.Data(data=response.body)))
        writer.write(http.send(h11.EndOfMessage()))
        await writer.drain()


class _BodyTooLarge(Exception):
    """A request body over MAX_BODY_BYTES (answered 413)."""
