"""Run the Management API stand-in: `python -m devstack.management_api --port 54360`.

Point the Supabase CLI at it with a profile file whose `api_url` is this address (`--profile <file>`);
functions are bundled with the repository's Deno and the stack's Deno cache (`.devstack/deno`).
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from devstack.config import StackConfig
from devstack.management_api.server import Deno, create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.management_api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = StackConfig.load()
    deno = Deno(binary=config.deno_bin, env=config.deno_env())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    web.run_app(create_app(deno), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
