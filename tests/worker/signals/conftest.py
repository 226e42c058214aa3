"""Fixtures for the signal engine's tests: a faulty network in front of the real analyze-signal function
(429/5xx answers and slow replies, then the real answer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest_asyncio
from aiohttp import web

from devstack.stack import DevStack

# Imported first: it loads python-binance with its import-time DeprecationWarning silenced.
from worker.market import binance_api as _binance_loaded  # noqa: F401


@dataclass
class FaultyNetwork:
    """Answers the next requests from `faults` (each {status, retry_after?} or {delay_secs} = forward the
    request but hold the real answer that long), then forwards; records every body it saw."""

    url: str
    faults: list[dict[str, Any]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    always: dict[str, Any] | None = None


@pytest_asyncio.fixture(loop_scope="function")
async def faulty_network(stack: DevStack) -> AsyncIterator[FaultyNetwork]:
    upstream = f"{stack.config.api_url}/functions/v1"
    network = FaultyNetwork(url="")
    async with httpx.AsyncClient(timeout=60) as forward:

        async def handle(request: web.Request) -> web.Response:
            body = await request.json()
            network.bodies.append(body)
            fault = network.faults.pop(0) if network.faults else network.always
            if fault is not None and "status" in fault:
                headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
                error = {"error": {"code": "injected", "message": f"injected {fault['status']}"}}
                return web.json_response(error, status=int(fault["status"]), headers=headers)
            answer = await forward.post(
                f"{upstream}/{request.match_info['name']}",
                json=body,
                headers={
                    k: v for k, v in request.headers.items() if k.lower() in ("apikey", "authorization")
                },
            )
            if fault is not None and "delay_secs" in fault:
                await asyncio.sleep(float(fault["delay_secs"]))
            return web.Response(
                body=answer.content, status=answer.status_code, content_type="application/json"
            )

        app = web.Application()
        app.router.add_post("/{name}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        network.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            yield network
        finally:
            await runner.cleanup()
