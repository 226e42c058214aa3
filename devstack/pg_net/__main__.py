"""Run the pg_net stand-in: `python -m devstack.pg_net --port 54344 --db-port 54322` (the stack starts it).

Installs the `net` schema's SQL interface, then sends queued requests; `GET /health` on --port answers 200.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from aiohttp import web

from devstack.pg_net.worker import install, run


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def serve(port: int, conninfo: str) -> None:
    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await run(conninfo)
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.pg_net", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="health port")
    parser.add_argument("--db-port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    conninfo = f"postgresql://postgres:postgres@127.0.0.1:{args.db_port}/postgres"
    install(conninfo)
    asyncio.run(serve(args.port, conninfo))


if __name__ == "__main__":
    main()
