"""`python -m devstack.exchange --port 54340 --speed 60`: run the Binance Spot simulator until stopped."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from datetime import datetime
from pathlib import Path

from devstack.exchange.data import DATA_DIR_ENV, default_data_dir
from devstack.exchange.server import ExchangeSimulator, SimulatorConfig


def _start_ms(text: str) -> int:
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give --start with a time zone, e.g. 2025-01-03T03:00:00Z")
    return int(moment.timestamp() * 1000)


def parse_args(argv: list[str]) -> SimulatorConfig:
    parser = argparse.ArgumentParser(prog="python -m devstack.exchange", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=54340)
    parser.add_argument("--speed", type=float, default=60.0, help="market seconds per real second")
    parser.add_argument("--start", type=_start_ms, help="market start: Unix ms or ISO time with zone")
    parser.add_argument("--paused", action="store_true", help="start with the clock stopped")
    parser.add_argument("--data-dir", type=Path, default=None, help="recorded klines (default: %(default)s)")
    parser.add_argument("--symbols", help="comma-separated subset of the recorded symbols")
    parser.add_argument(
        "--push-secs",
        type=float,
        default=None,
        help="push ticker and kline updates this often instead of Binance's pace (a test stepping a paused"
        " market waits less for each step)",
    )
    args = parser.parse_args(argv)
    if args.speed <= 0:
        parser.error("--speed must be positive")
    if args.push_secs is not None and args.push_secs <= 0:
        parser.error("--push-secs must be positive")
    return SimulatorConfig(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir or default_data_dir(),
        symbols=frozenset(args.symbols.split(",")) if args.symbols else None,
        start_ms=args.start,
        speed=args.speed,
        paused=args.paused,
        kline_push_secs=args.push_secs or SimulatorConfig.kline_push_secs,
        ticker_push_secs=args.push_secs or SimulatorConfig.ticker_push_secs,
    )


async def _serve(config: SimulatorConfig) -> None:
    simulator = ExchangeSimulator(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await simulator.start()
    logging.getLogger(__name__).info(
        "exchange simulator on %s symbols=%s market_time_ms=%d speed=%s",
        simulator.url, ",".join(simulator.markets), simulator.clock.now_ms(), config.speed,
    )  # fmt: skip
    try:
        await stop.wait()
    finally:
        await simulator.stop()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        asyncio.run(_serve(config))
    except FileNotFoundError as error:
        print(f"error: {error} (set ${DATA_DIR_ENV} to read them elsewhere)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
