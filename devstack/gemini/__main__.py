"""Run the Gemini stand-in: `python -m devstack.gemini --port 54341`."""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from devstack.gemini.server import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.gemini", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    web.run_app(create_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
