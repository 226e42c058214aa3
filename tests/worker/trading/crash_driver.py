"""A trading process the crash tests kill: runs one scenario step against the local stack and an exchange
simulator, SIGKILLing itself at a named point (`--crash-at venue.market_order:2:after`), or recovers.

    python -m tests.worker.trading.crash_driver --exchange URL --key K --secret S --token JWT
        --signal ID --trader ID --step open|partial_close|flip|stop_move|recover [--crash-at POINT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import uuid
from dataclasses import replace
from decimal import Decimal
from typing import Any

from devstack.keys import ANON_KEY
from tests.factories import ticker
from tests.worker.db.helpers import REST_URL
from tests.worker.trading.helpers import FUNCTIONS_URL
from worker.app import build_trading
from worker.clock import LiveClock
from worker.db import Tables
from worker.db.client import Database, MachineAuth
from worker.domain.decision import Decision
from worker.domain.enums import AnalysisDecision
from worker.domain.signal import SignalContext
from worker.domain.trader import Trader
from worker.market.store import KlineStore
from worker.market.tickers import TickerStore
from worker.signals.analysis import AnalysisClient, AnalysisSettings
from worker.trading.binance_venue import BinanceVenue
from worker.trading.config import TradingConfig


class Crashing:
    """Wraps an object; SIGKILLs this process before or after the n-th call of one method."""

    def __init__(self, target: Any, name: str, point: tuple[str, int, str] | None) -> None:
        self._target, self._name, self._point, self._calls = target, name, point, 0

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._target, attribute)
        point = self._point
        if point is None or not callable(value) or f"{self._name}.{attribute}" != point[0]:
            return value

        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            self._calls += 1
            hit = self._calls == point[1]
            if hit and point[2] == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            result = await value(*args, **kwargs)
            if hit and point[2] == "after":
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        return wrapped


async def main(args: argparse.Namespace) -> None:
    point = None
    if args.crash_at:
        name, count, when = args.crash_at.split(":")
        point = (name, int(count), when)
    venue = BinanceVenue(args.exchange, args.key, args.secret, request_timeout_secs=2.0, settle_secs=0.05)
    await venue.start()
    clock = LiveClock()
    auth = MachineAuth(ANON_KEY, args.token)
    database = Database(REST_URL, auth, clock=clock)
    tables = Tables.on(database, uuid.UUID(json.loads(args.trader_row)["user_id"]))
    crashing = replace(tables, trading=Crashing(tables.trading, "store", point))
    config = TradingConfig(symbol_cooldown_secs=0)
    tickers = TickerStore()
    unused = AnalysisClient(AnalysisSettings(functions_url=FUNCTIONS_URL), auth)  # no re-analysis here
    crashing_venue: Any = Crashing(venue, "venue", point)
    trading = build_trading(
        config, crashing, crashing_venue, tickers=tickers, klines=KlineStore(), analyzer=unused, clock=clock
    )
    executor = trading.executor
    try:
        report = await trading.recovery.run()
        price = Decimal(str((await venue._client.get_symbol_ticker(symbol="BTCUSDT"))["price"]))
        tickers.update(ticker("BTCUSDT", price, 1))
        trader = Trader.from_row(json.loads(args.trader_row))
        signal_id = uuid.UUID(args.signal)

        def context(step: str) -> SignalContext:
            analysis = uuid.uuid5(signal_id, step)
            return SignalContext(signal_id, trader, "BTCUSDT", price, price, analysis)

        def levels(kind: AnalysisDecision, below: str, above: str, **extra: Decimal) -> Decision:
            stop = (price * Decimal(below)).quantize(Decimal("0.01"))
            target = (price * Decimal(above)).quantize(Decimal("0.01"))
            return Decision(kind, "crash test", 80, stop_loss=stop, take_profit=target, **extra)  # type: ignore[arg-type]

        step = args.step
        if step == "open":
            await executor.execute(context("open"), levels(AnalysisDecision.OPEN_LONG, "0.98", "1.03"))
        elif step == "partial_close":
            await executor.execute(
                context("partial"),
                Decision(AnalysisDecision.PARTIAL_CLOSE, "t", 80, close_percentage=Decimal("0.5")),
            )
        elif step == "flip":
            await executor.execute(context("flip"), levels(AnalysisDecision.FLIP_POSITION, "1.02", "0.97"))
        elif step == "stop_move":
            stop = (price * Decimal("0.985")).quantize(Decimal("0.01"))
            await executor.execute(
                context("stop"), Decision(AnalysisDecision.UPDATE_STOP_LOSS, "t", 80, new_stop_loss=stop)
            )
        print(
            json.dumps(
                {
                    "recovered": report.pending_completed + report.pending_failed,
                    "exits": report.exchange_exits,
                }
            )
        )
    finally:
        await unused.aclose()
        await database.aclose()
        await venue.aclose()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    for name in ("--exchange", "--key", "--secret", "--token", "--signal", "--trader-row", "--step"):
        parser.add_argument(name, required=True)
    parser.add_argument("--crash-at")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse(sys.argv[1:])))
