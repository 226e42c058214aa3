"""Recorded Binance candles: loading the CSVs, the per-symbol price tape, and series for any interval.

Prices are float64 (the recorded values have at most a few decimals, so each float prints back exactly at 8
decimals); volumes are int64 in units of 1e-8 so aggregated volumes are exact sums. The local exchange
simulator replays these (devstack/exchange), and backtests run on them (worker/backtest).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

# The kline intervals the worker follows (Binance lists a few more the worker never uses).
from worker.domain.intervals import INTERVAL_MS

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

VOLUME_SCALE = 10**8

_FILE_NAME = re.compile(r"^(?P<symbol>[A-Z0-9]+)-(?P<interval>\w+)\.csv$")


def parse_volume_units(text: str) -> int:
    """'7.50148' -> 750148000 (units of 1e-8), exactly."""
    whole, _, fraction = text.partition(".")
    if len(fraction) > 8:
        raise ValueError(f"volume {text!r} has more than 8 decimals")
    return int(whole or "0") * VOLUME_SCALE + int((fraction + "00000000")[:8])


def format_price(value: float) -> str:
    return f"{value:.8f}"


def format_units(units: int) -> str:
    """750148000 -> '7.50148000' (Binance prints 8 decimals)."""
    whole, fraction = divmod(int(units), VOLUME_SCALE)
    return f"{whole}.{fraction:08d}"


@dataclass(frozen=True, slots=True)
class Candles:
    """Candles sorted by open time; `interval_ms` per row (a tape may mix intervals)."""

    open_time: IntArray
    interval_ms: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume_units: IntArray

    def __len__(self) -> int:
        return int(self.open_time.shape[0])

    def take(self, index: IntArray | slice) -> Candles:
        return Candles(
            self.open_time[index],
            self.interval_ms[index],
            self.open[index],
            self.high[index],
            self.low[index],
            self.close[index],
            self.volume_units[index],
        )

    @property
    def end_ms(self) -> int:
        """When the last candle closes (exclusive end of the data)."""
        return int(self.open_time[-1] + self.interval_ms[-1]) if len(self) else 0

    @staticmethod
    def concat(parts: list[Candles]) -> Candles:
        merged = Candles(
            *(np.concatenate([getattr(part, field) for part in parts]) for field in Candles.__slots__)
        )
        return merged.take(np.argsort(merged.open_time, kind="stable"))


def load_csv(path: Path, interval_ms: int) -> Candles:
    """Read `open_time_ms,open,high,low,close,volume` rows."""
    lines = path.read_text().splitlines()
    if not lines or not lines[0].startswith("open_time_ms,"):
        raise ValueError(f"{path}: expected a header starting with open_time_ms")
    rows = [line.split(",") for line in lines[1:] if line]
    times = np.array([int(row[0]) for row in rows], dtype=np.int64)
    prices = np.array([[float(value) for value in row[1:5]] for row in rows], dtype=np.float64).reshape(-1, 4)
    volumes = np.array([parse_volume_units(row[5]) for row in rows], dtype=np.int64)
    if len(times) > 1 and not (np.diff(times) > 0).all():
        raise ValueError(f"{path}: open times are not strictly increasing")
    return Candles(
        times,
        np.full(len(times), interval_ms, dtype=np.int64),
        prices[:, 0].copy(),
        prices[:, 1].copy(),
        prices[:, 2].copy(),
        prices[:, 3].copy(),
        volumes,
    )


def aggregate(piece: Candles, interval_ms: int) -> Candles:
    """Bucket `piece` (one source, one interval dividing `interval_ms`) into `interval_ms` candles.

    Buckets cut by the start or end of the recording are dropped; buckets with real gaps inside are kept
    (Binance aggregates whatever traded).
    """
    if len(piece) == 0:
        return piece
    bucket = piece.open_time // interval_ms * interval_ms
    starts = np.flatnonzero(np.concatenate(([True], bucket[1:] != bucket[:-1])))
    ends = np.concatenate((starts[1:], [len(piece)])) - 1
    opens = bucket[starts]
    complete = (opens >= piece.open_time[0]) & (opens + interval_ms <= piece.end_ms)
    result = Candles(
        opens,
        np.full(len(starts), interval_ms, dtype=np.int64),
        piece.open[starts],
        np.maximum.reduceat(piece.high, starts),
        np.minimum.reduceat(piece.low, starts),
        piece.close[ends],
        np.add.reduceat(piece.volume_units, starts),
    )
    return result.take(np.flatnonzero(complete))


@dataclass(frozen=True)
class SymbolData:
    """Every recording of one symbol: the files by interval, and the tape (finest data at each time)."""

    symbol: str
    files: dict[int, Candles]
    tape: Candles

    @classmethod
    def build(cls, symbol: str, files: dict[int, Candles]) -> SymbolData:
        pieces: list[Candles] = []
        covered: list[tuple[int, int]] = []
        for interval_ms in sorted(files):
            candles = files[interval_ms]
            keep = np.ones(len(candles), dtype=bool)
            for first, end in covered:
                keep &= (candles.open_time + candles.interval_ms <= first) | (candles.open_time >= end)
            piece = candles.take(np.flatnonzero(keep))
            if len(piece):
                pieces.append(piece)
                covered.append((int(piece.open_time[0]), piece.end_ms))
        return cls(symbol, files, Candles.concat(pieces))

    def series(self, interval_ms: int) -> Candles:
        """All closed-or-recorded candles of `interval_ms`: the recording itself where there is one,
        aggregated from finer recordings elsewhere."""
        parts: list[Candles] = []
        exact = self.files.get(interval_ms)
        taken: IntArray = exact.open_time if exact is not None else np.empty(0, dtype=np.int64)
        if exact is not None:
            parts.append(exact)
        for source_ms in sorted(self.files, reverse=True):
            if source_ms >= interval_ms or interval_ms % source_ms:
                continue
            aggregated = aggregate(self.files[source_ms], interval_ms)
            fresh = aggregated.take(np.flatnonzero(~np.isin(aggregated.open_time, taken)))
            if len(fresh):
                parts.append(fresh)
                taken = np.concatenate((taken, fresh.open_time))
        if not parts:
            return Candles.concat([self.tape.take(slice(0, 0))])
        return Candles.concat(parts)


def load_directory(data_dir: Path, symbols: set[str] | None = None) -> dict[str, SymbolData]:
    """Load every `<SYMBOL>-<interval>.csv` under `data_dir` (optionally only some symbols)."""
    if not data_dir.is_dir():
        raise FileNotFoundError(f"no kline recordings at {data_dir}")
    by_symbol: dict[str, dict[int, Candles]] = {}
    for path in sorted(data_dir.glob("*.csv")):
        match = _FILE_NAME.match(path.name)
        if match is None or match["interval"] not in INTERVAL_MS:
            continue
        if symbols is not None and match["symbol"] not in symbols:
            continue
        interval_ms = INTERVAL_MS[match["interval"]]
        by_symbol.setdefault(match["symbol"], {})[interval_ms] = load_csv(path, interval_ms)
    if not by_symbol:
        raise FileNotFoundError(f"no <SYMBOL>-<interval>.csv recordings in {data_dir}")
    return {symbol: SymbolData.build(symbol, files) for symbol, files in by_symbol.items()}
