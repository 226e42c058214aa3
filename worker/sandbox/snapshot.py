"""One sweep's klines and tickers in shared memory: written once by the worker, mapped read-only by sandboxes.

The worker copies every (symbol, timeframe) series into one `multiprocessing.shared_memory` segment and
describes it in a small JSON index (offsets, lengths, tickers). A sandbox process maps the segment
read-only (the file is opened O_RDONLY, so the kernel refuses writes) once per sweep and hands signal
code numpy views of it: no array is pickled or copied per check.

Segment layout, per series: open_time int64[n], then open, high, low, close, volume float64[n] each.
"""

from __future__ import annotations

import itertools
import json
import mmap
import os
from collections.abc import Mapping
from multiprocessing import shared_memory
from types import MappingProxyType, TracebackType
from typing import Any

import numpy as np

from worker.market.klines import Klines

_ITEM_BYTES = 8
_ARRAYS_PER_SERIES = 6
_SHM_DIR = "/dev/shm"  # noqa: S108 (where POSIX shared memory lives on Linux, not a temp file)
_generations = itertools.count(1)

Ticker = Mapping[str, float | int | str | bool | None]


class KlineSnapshot:
    """The klines and tickers of one sweep, in one shared-memory segment (close it when the sweep ends)."""

    def __init__(
        self,
        klines_by_symbol: Mapping[str, Mapping[str, Klines]],
        tickers: Mapping[str, Ticker] | None = None,
    ) -> None:
        self._memory: shared_memory.SharedMemory | None = None
        tickers = tickers or {}
        layout: dict[str, dict[str, list[int]]] = {}
        offset = 0
        for symbol, by_timeframe in klines_by_symbol.items():
            layout[symbol] = {}
            for timeframe, series in by_timeframe.items():
                layout[symbol][timeframe] = [offset, len(series), int(series.closed)]
                offset += _ARRAYS_PER_SERIES * _ITEM_BYTES * len(series)
        self.generation = next(_generations)
        self.size_bytes = max(offset, 1)
        self._memory = shared_memory.SharedMemory(create=True, size=self.size_bytes)
        try:
            self._write(klines_by_symbol, layout)
            self.index_json = json.dumps(
                {
                    "op": "snapshot",
                    "generation": self.generation,
                    "name": self._memory.name,
                    "size": self.size_bytes,
                    "series": layout,
                    "tickers": {symbol: dict(tickers.get(symbol, {})) for symbol in layout},
                },
                separators=(",", ":"),
            ).encode()
        except BaseException:
            self.close()
            raise
        self.name = self._memory.name
        self.symbols = frozenset(layout)

    def _write(
        self, klines_by_symbol: Mapping[str, Mapping[str, Klines]], layout: dict[str, dict[str, list[int]]]
    ) -> None:
        assert self._memory is not None
        buffer = self._memory.buf
        for symbol, by_timeframe in klines_by_symbol.items():
            for timeframe, series in by_timeframe.items():
                offset, count, _ = layout[symbol][timeframe]
                times = np.ndarray((count,), np.int64, buffer, offset)
                times[:] = series.open_time
                del times  # a live view would keep the segment from closing
                values = np.ndarray((5, count), np.float64, buffer, offset + _ITEM_BYTES * count)
                for row, array in enumerate(
                    (series.open, series.high, series.low, series.close, series.volume)
                ):
                    values[row] = array
                del values

    @property
    def closed(self) -> bool:
        return self._memory is None

    def close(self) -> None:
        """Remove the segment (sandboxes that mapped it keep their mapping until they drop it)."""
        if self._memory is not None:
            memory, self._memory = self._memory, None
            memory.close()
            memory.unlink()

    def __enter__(self) -> KlineSnapshot:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A safety net: a snapshot nobody closed must not leave its segment in /dev/shm.
        if getattr(self, "_memory", None) is not None:
            self.close()


class SnapshotReader:
    """A sandbox process's read-only view of one snapshot (built from its index)."""

    def __init__(self, index: Mapping[str, Any]) -> None:
        self.generation = int(index["generation"])
        name = str(index["name"])
        if "/" in name or name.startswith("."):
            raise ValueError("bad shared memory name")
        descriptor = os.open(os.path.join(_SHM_DIR, name), os.O_RDONLY)
        try:
            self._map = mmap.mmap(descriptor, int(index["size"]), access=mmap.ACCESS_READ)
        finally:
            os.close(descriptor)
        self._series: dict[str, dict[str, list[int]]] = index["series"]
        self._tickers: dict[str, dict[str, Any]] = index["tickers"]
        self._klines: dict[str, MappingProxyType[str, Klines]] = {}
        self._ticker_views: dict[str, MappingProxyType[str, Any]] = {}
        # Helper results for this snapshot's series, keyed by the series' ids: it lives and dies with
        # the views, so an id can never be reused while an entry for it remains.
        self.memo: dict[tuple[Any, ...], Any] = {}

    def has(self, symbol: str) -> bool:
        return symbol in self._series

    def klines(self, symbol: str) -> MappingProxyType[str, Klines]:
        """`klines` for check_signal: timeframe -> read-only Klines views of the segment."""
        view = self._klines.get(symbol)
        if view is None:
            view = MappingProxyType(
                {
                    timeframe: self._series_view(offset, count, bool(closed))
                    for timeframe, (offset, count, closed) in self._series.get(symbol, {}).items()
                }
            )
            self._klines[symbol] = view
        return view

    def ticker(self, symbol: str) -> MappingProxyType[str, Any]:
        view = self._ticker_views.get(symbol)
        if view is None:
            view = MappingProxyType(dict(self._tickers.get(symbol, {})))
            self._ticker_views[symbol] = view
        return view

    def _series_view(self, offset: int, count: int, closed: bool) -> Klines:
        times = np.frombuffer(self._map, np.int64, count, offset)
        values = np.frombuffer(self._map, np.float64, 5 * count, offset + _ITEM_BYTES * count)
        o, h, lo, c, v = (values[i * count : (i + 1) * count] for i in range(5))
        return Klines(times, o, h, lo, c, v, closed=closed)
