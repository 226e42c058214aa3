"""`python -m worker.validator`: the validator service; exit 78 on a configuration error."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from worker.errors import ConfigError
from worker.log_setup import configure_logging
from worker.sandbox import SandboxConfig, SandboxPool
from worker.validator.app import Validator, build_app
from worker.validator.settings import ValidatorSettings, load_validator_settings

EXIT_CONFIG = 78
logger = logging.getLogger("worker.validator")


async def serve(settings: ValidatorSettings) -> None:
    """Run until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    config = SandboxConfig(
        processes=settings.validator_processes,
        memory_limit_mb=settings.validator_memory_limit_mb,
        default_deadline_ms=settings.validator_deadline_ms,
    )
    async with SandboxPool(config) as pool:
        app = build_app(
            Validator(pool, settings.validator_max_concurrent), settings.validator_secret.get_secret_value()
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.http_host, settings.http_port).start()
            logger.info("validator listening port=%d processes=%d", settings.http_port, config.processes)
            await stop.wait()
        finally:
            await runner.cleanup()
    logger.info("validator stopped")


def main() -> int:
    try:
        settings = load_validator_settings()
    except ConfigError as error:
        print(f"validator: {error}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, [settings.validator_secret.get_secret_value()])
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
