"""`python -m worker`: read the settings, set up logging, run the app; exit 78 on a configuration error."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys

# The imports below create ~120k objects and none of them is garbage: collecting while they load only costs
# start-up time. main() turns collection back on, with what the imports made frozen out of its scans.
gc.disable()
# httpx imports its command-line client (click, rich and pygments: about a tenth of the start-up) whenever
# they are installed, as they are beside the console; the worker never runs it. None makes that import fail
# the way httpx expects when they are missing.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
# Likewise httpcore loads its HTTP/2 connection (h2, hpack, hyperframe: 1.2 MB resident) whenever h2 is
# installed, as it is for the supabase client; every client of the worker speaks HTTP/1.1.
sys.modules.setdefault("h2", None)  # type: ignore[arg-type]
# numpy's OpenBLAS starts threads (one per further CPU) that spin while the other imports run, 30-90 ms of CPU
# on a 2-CPU host; nothing the worker itself computes uses BLAS, and its sandbox processes run with one.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from worker import app
from worker.errors import ConfigError
from worker.log_setup import configure_logging
from worker.settings import load_settings

EXIT_CONFIG = 78  # sysexits.h EX_CONFIG: a restart will not help


def main() -> int:
    gc.freeze()
    gc.enable()
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"worker: {error}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.secrets())
    logger = logging.getLogger("worker")
    logger.info(
        "worker starting version=%s machine_id=%s user_id=%s",
        settings.version,
        settings.machine_id,
        settings.user_id,
    )
    try:
        asyncio.run(app.run(settings))
    except ConfigError as error:
        logger.error("worker cannot run: %s", error)
        return EXIT_CONFIG
    return 0


if __name__ == "__main__":
    sys.exit(main())
