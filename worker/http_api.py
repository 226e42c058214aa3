"""The machine's HTTP API (port 8080): health, metrics, live positions, lifecycle hooks (POST, bearer)."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, Protocol

from aiohttp import web

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
    async def reload_traders(self) -> int: ...
    async def prepare_shutdown(self) -> ShutdownReport: ...
    def request_shutdown(self, reason: str) -> None: ...


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


def build_app(control: WorkerControl, api_secret: str) -> web.Application:
    """The aiohttp application; POST routes require `Authorization: Bearer <api_secret>`."""

    @web.middleware
    async def require_bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "POST":
            presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not presented:
                return _error(
                    401, "missing_authorization", "POST endpoints need 'Authorization: Bearer <secret>'"
                )
            if not hmac.compare_digest(presented.encode(), api_secret.encode()):
                return _error(403, "invalid_secret", "the bearer secret is not this machine's")
        return await handler(request)

    async def health(_: web.Request) -> web.Response:
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
        return web.json_response(body, status=200 if healthy else 503)

    async def metrics_json(_: web.Request) -> web.Response:
        metrics = control.metrics
        return web.json_response(
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

    async def metrics_prometheus(_: web.Request) -> web.Response:
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
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")

    async def trader_metrics(_: web.Request) -> web.Response:
        figures = control.metrics.traders
        return web.json_response(
            {"traders": {trader_id: figures[trader_id].as_json() for trader_id in sorted(figures)}}
        )

    async def positions(_: web.Request) -> web.Response:
        return web.json_response({"positions": control.open_positions()})

    async def reload_traders(_: web.Request) -> web.Response:
        return web.json_response({"success": True, "tradersLoaded": await control.reload_traders()})

    async def prepare_shutdown(_: web.Request) -> web.Response:
        report = await control.prepare_shutdown()
        return web.json_response(
            {
                "success": True,
                "openPositions": report.open_positions,
                "watchingSignals": report.watching_signals,
                "components": report.components,
            }
        )

    async def shutdown(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "invalid_json", 'the body must be JSON like {"reason": "user_request"}')
        reason = body.get("reason") if isinstance(body, dict) else None
        if reason not in set(ShutdownReason):
            allowed = ", ".join(ShutdownReason)
            return _error(400, "invalid_reason", f"'reason' must be one of: {allowed}")
        report = await control.prepare_shutdown()
        control.request_shutdown(reason)
        return web.json_response(
            {
                "success": True,
                "message": "Machine shutting down gracefully",
                "openPositions": report.open_positions,
                "watchingSignals": report.watching_signals,
            }
        )

    app = web.Application(middlewares=[require_bearer])
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_json)
    app.router.add_get("/metrics/prometheus", metrics_prometheus)
    app.router.add_get("/metrics/traders", trader_metrics)
    app.router.add_get("/positions", positions)
    app.router.add_post("/reload-traders", reload_traders)
    app.router.add_post("/prepare-shutdown", prepare_shutdown)
    app.router.add_post("/shutdown", shutdown)
    return app
