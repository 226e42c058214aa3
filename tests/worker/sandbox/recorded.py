"""The recorded Binance candles (../shared/data/klines) as `Klines` series and sliding windows of them."""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

from worker.market.klines import Klines

REPO_ROOT = Path(__file__).resolve().parents[3]


def data_dir() -> Path:
    """$TRADEMIND_KLINES_DIR, else the shared recordings next to the repository."""
    override = os.environ.get("TRADEMIND_KLINES_DIR")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "data" / "klines"


@functools.cache
def load(symbol: str, timeframe: str) -> Klines:
    """A whole recording, oldest candle first."""
    with (data_dir() / f"{symbol}-{timeframe}.csv").open() as handle:
        rows = list(csv.reader(handle))[1:]
    columns = list(zip(*rows, strict=True))
    return Klines.from_arrays(*columns)


def window(series: Klines, end: int, length: int) -> Klines:
    """The `length` candles ending just before index `end` (copies, as the kline store would hand out)."""
    start = max(0, end - length)
    return Klines.from_arrays(
        series.open_time[start:end], series.open[start:end], series.high[start:end],
        series.low[start:end], series.close[start:end], series.volume[start:end],
    )  # fmt: skip
