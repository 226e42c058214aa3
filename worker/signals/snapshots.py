"""Sweep data for the sandbox: one shared-memory snapshot of the stores, shared by runs that start together.

Runs that fire at the same moment (every trader on `5m_close`, every `1m` timer) lease the same snapshot,
so the stores are copied once and the sandbox computes each symbol's helpers once per snapshot however
many traders ask. A lease names how fresh the data must be (built at or after `fresh_after`, on the
monotonic clock); an older or too narrow snapshot is replaced, and a replaced snapshot is closed as soon
as its last lease ends, so at most two exist at a time.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from worker.market.klines import Klines
from worker.market.store import KlineStore
from worker.market.tickers import TickerStore
from worker.sandbox import KlineSnapshot
from worker.signals.market_data import signal_ticker

logger = logging.getLogger(__name__)

KlineKey = tuple[str, str]


@dataclass(eq=False)
class _Entry:
    snapshot: KlineSnapshot
    built_at: float  # monotonic
    keys: frozenset[KlineKey]
    leases: int = 0
    retired: bool = False


class SnapshotSource:
    """Builds KlineSnapshots from the kline and ticker stores and shares them between concurrent runs."""

    def __init__(
        self,
        store: KlineStore,
        tickers: TickerStore,
        wanted: Callable[[], Iterable[KlineKey]],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._tickers = tickers
        self._wanted = wanted
        self._monotonic = monotonic
        self._current: _Entry | None = None
        self.builds = 0

    @contextlib.asynccontextmanager
    async def lease(self, fresh_after: float, needed: Iterable[KlineKey]) -> AsyncIterator[KlineSnapshot]:
        """A snapshot built at or after `fresh_after` that holds every series in `needed` the store has."""
        entry = self._current
        needed_keys = {key for key in needed if self._has_data(key)}
        if entry is None or entry.built_at < fresh_after or not needed_keys <= entry.keys:
            entry = self._build(needed_keys)
        entry.leases += 1
        try:
            yield entry.snapshot
        finally:
            entry.leases -= 1
            if entry.retired and entry.leases == 0:
                entry.snapshot.close()

    def close(self) -> None:
        """Retire the current snapshot (closed now unless a run still holds it)."""
        if self._current is not None:
            self._retire(self._current)
            self._current = None

    def _has_data(self, key: KlineKey) -> bool:
        series = self._store.get(*key)
        return series is not None and len(series) > 0

    def _build(self, needed: set[KlineKey]) -> _Entry:
        # Everything the traders follow, so runs starting a moment later can share it.
        keys = {key for key in self._wanted() if self._has_data(key)} | needed
        by_symbol: dict[str, dict[str, Klines]] = {}
        for symbol, timeframe in sorted(keys):
            series = self._store.get(symbol, timeframe)
            if series is not None:
                by_symbol.setdefault(symbol, {})[timeframe] = series.klines()
        tickers = {}
        for symbol in by_symbol:
            ticker = self._tickers.get(symbol)
            if ticker is not None:
                tickers[symbol] = signal_ticker(ticker)
        # The one it replaces goes first: closed now if no run holds it, so this one is written into its
        # segment and the machine holds one copy of the stores, not two.
        if self._current is not None:
            self._retire(self._current)
            self._current = None
        # Copied into shared memory synchronously: the feed cannot change the arrays half-way.
        snapshot = KlineSnapshot(by_symbol, tickers)
        entry = _Entry(snapshot, self._monotonic(), frozenset(keys))
        self._current = entry
        self.builds += 1
        return entry

    @staticmethod
    def _retire(entry: _Entry) -> None:
        entry.retired = True
        if entry.leases == 0:
            entry.snapshot.close()
