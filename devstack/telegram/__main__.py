"""Run the Telegram Bot API stand-in: `python -m devstack.telegram --port 54343 --state-dir DIR`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from aiohttp import web

from devstack.telegram.server import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.telegram", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True, help="where sent messages are kept")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    web.run_app(create_app(args.state_dir), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
