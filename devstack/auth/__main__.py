"""Run the Supabase Auth stand-in: `python -m devstack.auth --port 54334` (the stack starts it so).

Settings come from supabase/config.toml's `[auth]` table; flags override them (tests run their own instance
with small rate limits). The legacy JWT secret, trusted while a hosted project still has legacy keys, comes
from $AUTH_LEGACY_JWT_SECRET.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from aiohttp import web

from devstack.auth.server import AuthApi, AuthSettings, create_app
from devstack.auth.signing_keys import load_or_create
from devstack.auth.store import AuthStore
from devstack.config import AUTH_PORT, StackConfig


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, AuthSettings]:
    stack = StackConfig.load()
    auth = stack.auth
    rate_limit = auth.get("rate_limit", {})
    parser = argparse.ArgumentParser(prog="python -m devstack.auth", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=AUTH_PORT)
    parser.add_argument("--db-url", default=stack.db_url)
    parser.add_argument("--keys-file", type=Path, default=stack.signing_keys_path)
    parser.add_argument("--issuer", default=f"{stack.api_url}/auth/v1")
    parser.add_argument("--sign-in-limit", type=int, default=int(rate_limit.get("sign_in_sign_ups", 30)))
    parser.add_argument("--refresh-limit", type=int, default=int(rate_limit.get("token_refresh", 150)))
    parser.add_argument("--jwt-expiry-secs", type=int, default=int(auth.get("jwt_expiry", 3600)))
    args = parser.parse_args(argv)
    settings = AuthSettings(
        issuer=args.issuer,
        jwt_expiry_secs=args.jwt_expiry_secs,
        refresh_token_reuse_interval_secs=int(auth.get("refresh_token_reuse_interval", 10)),
        minimum_password_length=int(auth.get("minimum_password_length", 6)),
        password_requirements=str(auth.get("password_requirements", "")),
        sign_in_sign_ups_per_5_min=args.sign_in_limit,
        token_refreshes_per_5_min=args.refresh_limit,
        legacy_jwt_secret=os.environ.get("AUTH_LEGACY_JWT_SECRET") or None,
    )
    return args, settings


async def serve(args: argparse.Namespace, settings: AuthSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    store = AuthStore(args.db_url)
    await store.apply_schema()
    api = AuthApi(store, load_or_create(args.keys_file), settings)
    runner = web.AppRunner(create_app(api), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.port).start()
        logging.getLogger("devstack.auth").info(
            "auth on %s:%d issuer=%s", args.host, args.port, settings.issuer
        )
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args, settings = parse_args()
    asyncio.run(serve(args, settings))


if __name__ == "__main__":
    main()
