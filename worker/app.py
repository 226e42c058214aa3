"""The composition root: builds the worker's components, runs them under one TaskGroup, shuts down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from aiohttp import web

from worker.clock import Clock, LiveClock
from worker.components import Component, ComponentState
from worker.database import MachineDatabase, check_schema_version
from worker.domain.enums import MachineStatus
from worker.errors import ConfigError
from worker.heartbeat import Heartbeat
from worker.http_api import ShutdownReport, build_app
from worker.metrics import WorkerMetrics
from worker.retry import retry
from worker.settings import WorkerSettings
from worker.signals.wiring import SignalEngineParts, build_signal_engine
from worker.trading.wiring import TradingSystem, build_trading

logger = logging.getLogger(__name__)

# How long POST /reload-traders waits for the trader sync's reconcile before counting what the database holds.
RELOAD_TIMEOUT_SECS = 30.0


class _StopRequested(Exception):
    """Raised inside the TaskGroup to cancel every component once shutdown is under way."""


class WorkerApp:
    """One user's worker: start-up checks, components, the HTTP API, heartbeat, graceful shutdown."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        components: list[Component] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.version = settings.version
        self.machine_id = settings.machine_id
        self.metrics = WorkerMetrics()
        self._clock = clock or LiveClock()
        self._components = list(components or [])
        # Without injected components the app runs the signal engine (feed, sandbox, scheduler, sync).
        self._with_signal_engine = components is None
        self.signal_engine: SignalEngineParts | None = None
        self.trading: TradingSystem | None = None
        self._database = MachineDatabase(
            settings.rest_url,
            settings.supabase_anon_key.get_secret_value(),
            settings.machine_token.get_secret_value(),
        )
        self._heartbeat = Heartbeat(
            self._database, settings.version, settings.heartbeat_interval_secs, self._clock
        )
        self._started_monotonic = self._clock.monotonic()
        self._stop = asyncio.Event()
        self._prepared: ShutdownReport | None = None
        self._prepare_lock = asyncio.Lock()
        self.shutdown_reason: str | None = None

    # Lifecycle ----------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Check the schema, recover state, run everything until a shutdown is requested, then stop."""
        try:
            version = await retry(self._database.schema_version, what="schema_version()", clock=self._clock)
            check_schema_version(version)
            await retry(self._first_heartbeat, what="first heartbeat", clock=self._clock)
            await self.reload_traders()
            async with contextlib.AsyncExitStack() as engine_resources:
                if self._with_signal_engine:
                    self.trading = await build_trading(self.settings, engine_resources, clock=self._clock)
                    self.signal_engine = await build_signal_engine(
                        self.settings,
                        self.metrics,
                        engine_resources,
                        executor=self.trading.executor,
                        reanalyzer=self.trading.reanalyzer,
                        extra_tickers=self.trading.position_symbols,
                        clock=self._clock,
                    )
                    # Positions are guarded from the first ticker on: recovery re-arms the monitor first.
                    self.trading.attach(self.signal_engine.feed)
                    await self.trading.recover(self.metrics)
                    self._components += self.trading.components + self.signal_engine.components
                runner = await self._start_http()
                try:
                    await self._run_components()
                finally:
                    await runner.cleanup()
        finally:
            await self._database.aclose()

    async def _first_heartbeat(self) -> None:
        await self._database.record_heartbeat(MachineStatus.STARTING, self.version)

    async def _run_components(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_shutdown, signal.Signals(signum).name)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._heartbeat.run(), name="heartbeat")
                for component in self._components:
                    group.create_task(component.run(), name=component.name)
                group.create_task(self._stop_when_requested(), name="shutdown")
        except* _StopRequested:
            pass
        except* ConfigError as errors:
            # A component found the configuration unusable (e.g. a refused token): stop as misconfigured.
            raise errors.exceptions[0] from None
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        await self._heartbeat.beat(MachineStatus.STOPPED)
        logger.info("worker stopped reason=%s", self.shutdown_reason)

    async def _stop_when_requested(self) -> None:
        await self._stop.wait()
        try:
            async with asyncio.timeout(self.settings.shutdown_timeout_secs):
                await self.prepare_shutdown()
        except TimeoutError:
            logger.error(
                "prepare_shutdown did not finish within %.0fs; stopping anyway",
                self.settings.shutdown_timeout_secs,
            )
        raise _StopRequested

    async def _start_http(self) -> web.AppRunner:
        app = build_app(self, self.settings.machine_api_secret.get_secret_value())
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.http_host, self.settings.http_port)
        await site.start()
        logger.info("http api listening host=%s port=%d", self.settings.http_host, self.settings.http_port)
        return runner

    # WorkerControl (used by the HTTP API) -------------------------------------------------------------------
    def uptime_secs(self) -> float:
        return self._clock.monotonic() - self._started_monotonic

    def component_states(self) -> dict[str, ComponentState]:
        states = {self._heartbeat.name: self._heartbeat.state()}
        states.update({component.name: component.state() for component in self._components})
        return states

    async def open_positions(self) -> list[dict[str, Any]]:
        return await self._database.open_positions()

    async def reload_traders(self) -> int:
        """Re-read what the database holds for this user; returns the number of active traders."""
        if self.signal_engine is not None and not self._prepare_lock.locked():  # not while shutting down
            try:
                async with asyncio.timeout(RELOAD_TIMEOUT_SECS):
                    await self.signal_engine.trader_sync.reload_traders()
            except TimeoutError:
                logger.warning("trader sync did not reconcile within %.0fs", RELOAD_TIMEOUT_SECS)
        state = await retry(self._database.recover_state, what="recover state", clock=self._clock)
        self.metrics.active_traders = state.active_traders
        self.metrics.open_positions = state.open_positions
        self.metrics.watching_signals = state.watching_signals
        logger.info(
            "state loaded active_traders=%d open_positions=%d watching_signals=%d",
            state.active_traders,
            state.open_positions,
            state.watching_signals,
        )
        return state.active_traders

    async def prepare_shutdown(self) -> ShutdownReport:
        """Pause new work, let in-flight work finish, persist; idempotent (a second call reports again)."""
        async with self._prepare_lock:
            if self._prepared is None:
                for component in self._components:
                    with contextlib.suppress(Exception):
                        await component.prepare_shutdown()
                await self._heartbeat.prepare_shutdown()
            with contextlib.suppress(Exception):
                await self.reload_traders()
            self._prepared = ShutdownReport(
                open_positions=self.metrics.open_positions,
                watching_signals=self.metrics.watching_signals,
                components={name: state.value for name, state in self.component_states().items()},
            )
            return self._prepared

    def request_shutdown(self, reason: str) -> None:
        if not self._stop.is_set():
            logger.info("shutdown requested reason=%s", reason)
            self.shutdown_reason = reason
            self._stop.set()
