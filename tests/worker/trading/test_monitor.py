"""The position monitor on replayed real candles (BTCUSDT and ETHUSDT 1m), against a plain reference.

Each candle becomes the price path open -> low/high (in the order the candle's direction implies) -> close,
fed tick by tick through `on_price`; the reference is a separate loop over the same ticks.
"""

from __future__ import annotations

import asyncio
import csv
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from worker.clock import LiveClock
from worker.domain.enums import PositionSide, TradingMode
from worker.domain.ledger import open_book
from worker.domain.positions import CloseReason, OpenPosition, TrailingMode, TrailingSpec, TrailingState
from worker.trading.config import TradingConfig
from worker.trading.guard import PositionGuard
from worker.trading.monitor import PositionMonitor

DATA = Path("/work/shared/data/klines")


def ticks(symbol: str, count: int) -> list[Decimal]:
    path: list[Decimal] = []
    with (DATA / f"{symbol}-1m.csv").open() as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            if index >= count:
                break
            o, h, low, c = (Decimal(row[k]) for k in ("open", "high", "low", "close"))
            path += [o, low, h, c] if c >= o else [o, h, low, c]
    return path


def true_ranges(symbol: str, count: int, period: int = 14) -> list[Decimal]:
    """A plain Wilder ATR per tick (four ticks per candle), from the candles before each tick's candle."""
    rows = []
    with (DATA / f"{symbol}-1m.csv").open() as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            if index >= count:
                break
            rows.append((Decimal(row["high"]), Decimal(row["low"]), Decimal(row["close"])))
    atr: Decimal | None = None
    per_candle: list[Decimal] = []
    trs: list[Decimal] = []
    for i, (high, low, _close) in enumerate(rows):
        per_candle.append(atr if atr is not None else Decimal(0))
        previous = rows[i - 1][2] if i else high
        trs.append(max(high - low, abs(high - previous), abs(low - previous)))
        if len(trs) == period:
            atr = sum(trs, Decimal(0)) / period
        elif len(trs) > period and atr is not None:
            atr = (atr * (period - 1) + trs[-1]) / period
    return [value for value in per_candle for _ in range(4)]


def reference(
    side: PositionSide,
    *,
    sl: Decimal,
    tp: Decimal,
    spec: TrailingSpec | None,
    path: list[Decimal],
    atrs: list[Decimal],
) -> tuple[int, CloseReason, Decimal] | None:
    long = side is PositionSide.LONG
    best: Decimal | None = None
    trail: Decimal | None = None
    for i, price in enumerate(path):
        if spec is not None:
            active = best is not None or spec.activation_price is None or (
                price >= spec.activation_price if long else price <= spec.activation_price)  # fmt: skip
            if active:
                best = price if best is None else (max(best, price) if long else min(best, price))
                if spec.mode is TrailingMode.PERCENT:
                    level: Decimal | None = best * (1 - spec.distance) if long else best * (1 + spec.distance)
                else:
                    level = (
                        (best - spec.distance * atrs[i] if long else best + spec.distance * atrs[i])
                        if atrs[i] > 0
                        else None
                    )
                if level is not None and level > 0:
                    trail = level if trail is None else (max(trail, level) if long else min(trail, level))
        if (price <= sl) if long else (price >= sl):
            return i, CloseReason.STOP_LOSS, price
        if (price >= tp) if long else (price <= tp):
            return i, CloseReason.TAKE_PROFIT, price
        if trail is not None and ((price <= trail) if long else (price >= trail)):
            return i, CloseReason.TRAILING_STOP, price
    return None


class RecordedExits:
    """Protection's side of the guard, recording each close (the position is then gone)."""

    def __init__(self, monitor: PositionMonitor, exits: dict[uuid.UUID, tuple[CloseReason, Decimal]]) -> None:
        self._monitor = monitor
        self._exits = exits

    async def close_for_monitor(self, position_id: uuid.UUID, reason: CloseReason, price: Decimal) -> None:
        self._exits[position_id] = (reason, price)
        self._monitor.untrack(position_id)

    async def record_trailing(self, position_id: uuid.UUID, state: TrailingState) -> None:
        return None

    async def reconcile_exchange_exits(self) -> int:
        return 0


CASES = [
    # (side, stop distance, target distance, trailing)
    (PositionSide.LONG, "0.004", "0.006", None),
    (PositionSide.SHORT, "0.004", "0.006", None),
    (PositionSide.LONG, "0.01", "0.02", TrailingSpec(TrailingMode.PERCENT, Decimal("0.003"))),
    (PositionSide.SHORT, "0.01", "0.02", TrailingSpec(TrailingMode.PERCENT, Decimal("0.003"))),
    (PositionSide.LONG, "0.01", "0.02", TrailingSpec(TrailingMode.ATR, Decimal("3"))),
    (PositionSide.SHORT, "0.01", "0.02", TrailingSpec(TrailingMode.ATR, Decimal("3"))),
]


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
@pytest.mark.parametrize(("side", "stop", "target", "spec"), CASES)
async def test_exits_match_the_plain_reference_on_recorded_candles(
    symbol: str, side: PositionSide, stop: str, target: str, spec: TrailingSpec | None
) -> None:
    candles = 3000
    path = ticks(symbol, candles)
    atrs = true_ranges(symbol, candles)
    exits: dict[uuid.UUID, tuple[CloseReason, Decimal]] = {}

    current_atr = {"value": Decimal(0)}
    monitor = PositionMonitor(
        TradingConfig(), clock=LiveClock(), atr=lambda _symbol: current_atr["value"] or None
    )
    guard = PositionGuard(monitor, RecordedExits(monitor, exits), TradingConfig(), clock=LiveClock())
    runner = asyncio.create_task(guard.run())
    # A position opened every 200 candles (at that candle's open), all watched at once.
    expected: dict[uuid.UUID, tuple[int, CloseReason, Decimal] | None] = {}
    starts: dict[int, OpenPosition] = {}
    for start in range(0, len(path) - 4, 800):
        entry = path[start]
        long = side is PositionSide.LONG
        sl = entry * (1 - Decimal(stop)) if long else entry * (1 + Decimal(stop))
        tp = entry * (1 + Decimal(target)) if long else entry * (1 - Decimal(target))
        position = OpenPosition(
            uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), symbol, TradingMode.PAPER,
            open_book(side, Decimal(1), entry), sl, tp, trailing=spec,
        )  # fmt: skip
        starts[start] = position
        found = reference(side, sl=sl, tp=tp, spec=spec, path=path[start:], atrs=atrs[start:])
        expected[position.id] = None if found is None else (found[0] + start, found[1], found[2])
    try:
        for index, price in enumerate(path):
            if index in starts:
                monitor.track(starts[index])
            current_atr["value"] = atrs[index]
            monitor.on_price(symbol, price)
            if index % 64 == 0:
                await asyncio.sleep(0)
        for _ in range(50):
            await asyncio.sleep(0)
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    assert any(value is not None for value in expected.values())
    for position_id, found in expected.items():
        got = exits.get(position_id)
        assert (None if found is None else (found[1], found[2])) == got
    assert monitor.close_failures == 0
