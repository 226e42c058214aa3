"""New signal code run once on recorded candles in the sandbox, before a trader is saved with it.

The candles ship with the package (`dry_run_klines.npz`, real Binance BTCUSDT candles for every timeframe
a trader can read, built from the recordings by `python -m worker.sandbox.dry_run KLINES_DIR`), so a dry
run needs no network and gives the same verdict everywhere. Each of the strategy's symbols gets a
different full-length window (the kline store's capacity, what a machine hands check_signal after its
backfill) in each of a few rounds, with a ticker derived from it.
"""

from __future__ import annotations

import csv
import functools
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worker.domain.intervals import INTERVAL_MS
from worker.market.klines import KLINE_FIELDS, Klines
from worker.market.store import DEFAULT_CAPACITY
from worker.sandbox.compiler import SignalProgram
from worker.sandbox.runner import SignalRunner
from worker.sandbox.snapshot import KlineSnapshot

DATA_PATH = Path(__file__).with_name("dry_run_klines.npz")
ROUNDS = 3
# Extra candles kept beyond one window, so windows of different rounds and symbols differ.
_SLACK = 240
# Which recording each timeframe is aggregated from (the finest one that covers a full window).
_SOURCES = {
    "1m": "BTCUSDT-1m", "3m": "BTCUSDT-1m", "5m": "BTCUSDT-5m", "15m": "BTCUSDT-5m", "30m": "BTCUSDT-5m",
    "1h": "BTCUSDT-1h", "2h": "BTCUSDT-1h", "4h": "BTCUSDT-1h", "6h": "BTCUSDT-1h", "8h": "BTCUSDT-1h",
    "12h": "BTCUSDT-1h", "1d": "BTCUSDT-1h",
}  # fmt: skip
_MAX_ERRORS_SHOWN = 3


@dataclass(frozen=True, slots=True)
class DryRunReport:
    """What the dry run saw: checks run, matches, declines, and the failures (symbol -> message)."""

    checks: int
    matches: int
    declined: int
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def problem(self) -> str:
        """The failures in one line, for the person (or model) who wrote the code."""
        shown = [f"{symbol}: {message}" for symbol, message in list(self.errors.items())[:_MAX_ERRORS_SHOWN]]
        more = len(self.errors) - len(shown)
        suffix = f" (and {more} more)" if more > 0 else ""
        return (
            f"check_signal failed on recorded candles in {len(self.errors)} of {self.checks} checks: "
            + "; ".join(shown)
            + suffix
        )


async def dry_run(
    runner: SignalRunner,
    program: SignalProgram,
    timeframes: Sequence[str],
    symbols: Sequence[str],
    *,
    rounds: int = ROUNDS,
    deadline_ms: float | None = None,
) -> DryRunReport:
    """Evaluate `program` over `rounds` sweeps of recorded candles for `symbols` x `timeframes`.

    Raises:
        SignalRuntimeError: the program was stopped (deadline, memory, recursion, crash).
        ValueError: a timeframe the recordings do not cover.
    """
    unknown = sorted(set(timeframes) - set(_SOURCES))
    if unknown:
        raise ValueError(f"no recorded candles for timeframe(s) {', '.join(unknown)}")
    checks = matches = declined = 0
    errors: dict[str, str] = {}
    for round_index in range(rounds):
        klines = windows(timeframes, symbols, round_index)
        tickers = {symbol: ticker(by_timeframe) for symbol, by_timeframe in klines.items()}
        with KlineSnapshot(klines, tickers) as snapshot:
            result = await runner.evaluate(program, list(symbols), snapshot, deadline_ms=deadline_ms)
        checks += result.checked
        matches += len(result.matches)
        declined += len(result.declined)
        for symbol, message in result.errors.items():
            errors.setdefault(symbol, message)
    return DryRunReport(checks, matches, declined, errors)


def windows(
    timeframes: Sequence[str], symbols: Sequence[str], round_index: int
) -> dict[str, dict[str, Klines]]:
    """One round's data: per symbol, a window of each timeframe that no other symbol or round shares."""
    data = recorded()
    found: dict[str, dict[str, Klines]] = {}
    for position, symbol in enumerate(symbols):
        by_timeframe = {}
        for timeframe in timeframes:
            series = data[timeframe]
            length = min(DEFAULT_CAPACITY, len(series))
            slack = len(series) - length
            shift = (round_index * len(symbols) + position) * 37 % (slack + 1)
            end = len(series) - shift
            by_timeframe[timeframe] = _slice(series, end - length, end)
        found[symbol] = by_timeframe
    return found


def ticker(by_timeframe: Mapping[str, Klines]) -> dict[str, float]:
    """The ticker check_signal receives (worker.signals.market_data.signal_ticker), from the finest series."""
    series = min(by_timeframe.values(), key=lambda k: int(k.open_time[1] - k.open_time[0]))
    day = max(1, min(len(series), round(86_400_000 / int(series.open_time[1] - series.open_time[0]))))
    last, opened = float(series.close[-1]), float(series.open[-day])
    return {
        "lastPrice": last,
        "volume24h": float(series.volume[-day:].sum()),
        "quoteVolume24h": float((series.volume[-day:] * series.close[-day:]).sum()),
        "priceChange24h": (last - opened) / opened * 100,
        "priceChangeAbs24h": last - opened,
        "openPrice24h": opened,
        "highPrice24h": float(series.high[-day:].max()),
        "lowPrice24h": float(series.low[-day:].min()),
        "bidPrice": last,
        "askPrice": last,
    }


@functools.cache
def recorded() -> dict[str, Klines]:
    """The bundled candles, one series per timeframe."""
    with np.load(DATA_PATH, allow_pickle=False) as archive:
        return {
            timeframe: Klines.from_arrays(*(archive[f"{timeframe}/{name}"] for name in KLINE_FIELDS))
            for timeframe in INTERVAL_MS
        }


def build(klines_dir: Path) -> dict[str, np.ndarray]:
    """The arrays of the bundled file, aggregated from the recordings in `klines_dir`."""
    arrays: dict[str, np.ndarray] = {}
    for timeframe in INTERVAL_MS:
        source = _read_csv(klines_dir / f"{_SOURCES[timeframe]}.csv")
        series = _aggregate(source, INTERVAL_MS[timeframe])
        keep = DEFAULT_CAPACITY + _SLACK
        for name, values in zip(KLINE_FIELDS, series, strict=True):
            arrays[f"{timeframe}/{name}"] = values[-keep:]
    return arrays


def _read_csv(path: Path) -> list[np.ndarray]:
    with path.open() as handle:
        rows = list(csv.reader(handle))[1:]
    columns = list(zip(*rows, strict=True))
    return [np.asarray(columns[0], dtype=np.int64)] + [np.asarray(c, dtype=np.float64) for c in columns[1:]]


def _aggregate(source: list[np.ndarray], interval_ms: int) -> list[np.ndarray]:
    """Candles of `interval_ms` from finer ones (Binance's buckets: open times on the interval grid)."""
    times, opens, highs, lows, closes, volumes = source
    buckets = times // interval_ms
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], len(times)] - 1
    return [
        buckets[starts] * interval_ms,
        opens[starts],
        np.maximum.reduceat(highs, starts),
        np.minimum.reduceat(lows, starts),
        closes[ends],
        np.add.reduceat(volumes, starts),
    ]


def _slice(series: Klines, start: int, end: int) -> Klines:
    return Klines.from_arrays(*(getattr(series, name)[start:end] for name in KLINE_FIELDS))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(
            "usage: python -m worker.sandbox.dry_run KLINES_DIR  (writes worker/sandbox/dry_run_klines.npz)"
        )
    np.savez_compressed(DATA_PATH, allow_pickle=False, **build(Path(sys.argv[1])))
