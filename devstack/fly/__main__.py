"""Run the Fly stand-in: `python -m devstack.fly --port 54342 --edge-port 54350 --state-dir .devstack/fly`.

`--port` serves the Machines API (and the test controls); `--edge-port` is the app's public edge
(`https://<app>.fly.dev`), where Fly Proxy routes requests to machines.

The API token comes from $FLY_API_TOKEN and the app name from $FLY_APP_NAME. Machines run with this
interpreter (`sys.executable -m worker`). SIGTERM/SIGINT stop every machine process, then the server.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from devstack.config import REPO_ROOT
from devstack.fly.edge import Deliveries, create_edge_app
from devstack.fly.faults import FaultBook
from devstack.fly.machines import Fleet
from devstack.fly.server import create_app


async def serve(args: argparse.Namespace, app_name: str, token: str) -> None:
    """Serve until SIGTERM/SIGINT; the one TaskGroup here owns every supervisor and background task."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    faults = FaultBook()
    async with asyncio.TaskGroup() as group:
        fleet = Fleet(
            app_name=app_name,
            state_dir=args.state_dir,
            python=sys.executable,
            repo_root=REPO_ROOT,
            faults=faults,
        )
        fleet.attach(group)
        await fleet.restore()
        deliveries = Deliveries()
        api_app, edge_app = create_app(fleet, faults, token, deliveries), create_edge_app(fleet, deliveries)
        runner = web.AppRunner(api_app, access_log=None, handle_signals=False)
        edge = web.AppRunner(edge_app, access_log=None, handle_signals=False)
        await runner.setup()
        await edge.setup()
        try:
            await web.TCPSite(edge, args.host, args.edge_port).start()
            await web.TCPSite(runner, args.host, args.port).start()
            logger = logging.getLogger("devstack.fly")
            logger.info("machines api on :%d, app edge on :%d, app=%s", args.port, args.edge_port, app_name)
            await stop.wait()
        finally:
            await fleet.shutdown()
            await edge.cleanup()
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.fly", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--edge-port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    token = os.environ.get("FLY_API_TOKEN", "")
    if not token:
        parser.error("FLY_API_TOKEN must be set (the token API callers must present)")
    app_name = os.environ.get("FLY_APP_NAME", "trademind-workers")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args, app_name, token))


if __name__ == "__main__":
    main()
