"""Run the Realtime stand-in: `python -m devstack.realtime --port 54333` (the stack starts it so)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal

from devstack.config import REALTIME_PORT, StackConfig
from devstack.postgres import PG_BIN_DIR
from devstack.realtime.server import SLOT_PREFIX, RealtimeServer, ServerConfig
from devstack.realtime.wal import DatabaseAddress


def parse_config(argv: list[str] | None = None) -> ServerConfig:
    stack = StackConfig.load()
    parser = argparse.ArgumentParser(prog="python -m devstack.realtime", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=REALTIME_PORT)
    parser.add_argument("--db-port", type=int, default=stack.db_port)
    parser.add_argument("--db-name", default="postgres")
    parser.add_argument(
        "--slot", default=None, help="replication slot to own (default devstack_realtime_<port>)"
    )
    args = parser.parse_args(argv)
    return ServerConfig(
        host=args.host,
        port=args.port,
        database=DatabaseAddress("127.0.0.1", args.db_port, "postgres", "postgres", args.db_name),
        # What PostgREST trusts: the project's signing keys and the legacy secret (never printed).
        jwks=json.loads(os.environ["REALTIME_JWKS"])
        if os.environ.get("REALTIME_JWKS")
        else stack.jwks_with_legacy_secret(),
        slot_name=args.slot or f"{SLOT_PREFIX}{args.port}",
        recvlogical_bin=PG_BIN_DIR / "pg_recvlogical",
    )


async def _main(config: ServerConfig) -> None:
    server_task = asyncio.create_task(RealtimeServer(config).run(), name="realtime-server")
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, server_task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await server_task


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("REALTIME_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)
    asyncio.run(_main(parse_config()))


if __name__ == "__main__":
    main()
