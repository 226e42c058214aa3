"""One sweep's klines and tickers in shared memory: written once by the worker, mapped read-only by sandboxes.

The worker copies every (symbol, timeframe) series into one POSIX shared-memory segment (a file in
/dev/shm) and describes it in a small JSON index (offsets, lengths, tickers). A sandbox process maps the
segment read-only (the file is opened O_RDONLY, so the kernel refuses writes) once per sweep and hands
signal code numpy views of it: no array is pickled or copied per check.

The segment is made here rather than with `multiprocessing.shared_memory`, which would start a resource
tracker process (13 MB) to unlink segments after a crash; instead each segment's name carries the
worker's pid, and the first snapshot a worker makes removes the segments of workers that are gone.

A closed snapshot's segment is kept (one, MAX_SPARE) and the next snapshot is written into it:
allocating and zeroing fresh pages cost most of a snapshot's time (12 of 17 ms CPU for 100 x 3 x 1000).
Closed means no run holds the snapshot any more, so no sandbox reads it again; a sandbox that still has
it mapped sees the new candles under an old generation it is never asked about, and drops that
generation when it maps the new one (same segment name). More spares would only hold memory: the worker
closes a snapshot before it builds the next (worker.signals.snapshots). Spares are removed when the
worker exits.

Segment layout, per series: open_time int64[n], then open, high, low, close, volume float64[n] each.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import mmap
import os
from collections.abc import Mapping
from types import MappingProxyType, TracebackType
from typing import Any

import numpy as np

from worker.market.klines import Klines

_ITEM_BYTES = 8
_ARRAYS_PER_SERIES = 6
_SHM_DIR = "/dev/shm"  # noqa: S108 (where POSIX shared memory lives on Linux, not a temp file)
_PREFIX = "trademind-klines-"
_generations = itertools.count(1)
_swept_for_pid: int | None = None
MAX_SPARE = 1
_spare: list[str] = []  # names of closed segments, this process's own, for the next snapshots

Ticker = Mapping[str, float | int | str | bool | None]


class KlineSnapshot:
    """The klines and tickers of one sweep, in one shared-memory segment (close it when the sweep ends)."""

    def __init__(
        self,
        klines_by_symbol: Mapping[str, Mapping[str, Klines]],
        tickers: Mapping[str, Ticker] | None = None,
    ) -> None:
        self._path: str | None = None
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
        self.name = _create_segment(self.size_bytes)
        self._path = os.path.join(_SHM_DIR, self.name)
        try:
            _write(self._path, self.size_bytes, klines_by_symbol, layout)
            self.index_json = json.dumps(
                {
                    "op": "snapshot",
                    "generation": self.generation,
                    "name": self.name,
                    "size": self.size_bytes,
                    "series": layout,
                    "tickers": {symbol: dict(tickers.get(symbol, {})) for symbol in layout},
                },
                separators=(",", ":"),
            ).encode()
        except BaseException:
            self.close()
            raise
        self.symbols = frozenset(layout)

    @property
    def closed(self) -> bool:
        return self._path is None

    def close(self) -> None:
        """Release the segment: kept for the next snapshot while there are few spares, else removed."""
        if self._path is not None:
            path, self._path = self._path, None
            if len(_spare) < MAX_SPARE and self.name.startswith(f"{_PREFIX}{os.getpid()}-"):
                _spare.append(self.name)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def __enter__(self) -> KlineSnapshot:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A safety net: a snapshot nobody closed must not leave its segment in /dev/shm.
        if getattr(self, "_path", None) is not None:
            self.close()


def _create_segment(size: int) -> str:
    """A segment of `size` bytes, readable and writable by this user only (a spare if there is one)."""
    _remove_orphans()
    while _spare:
        name = _spare.pop()
        path = os.path.join(_SHM_DIR, name)
        try:
            # Grown, never shrunk: a sandbox may still map the old generation's full size (it never reads
            # it again, but a mapping past the end of its file would fault).
            if os.stat(path).st_size < size:
                os.truncate(path, size)
        except FileNotFoundError:
            continue  # removed by someone else: make a new one
        return name
    name = f"{_PREFIX}{os.getpid()}-{os.urandom(8).hex()}"  # not `secrets`: it loads OpenSSL (3.5 MB)
    path = os.path.join(_SHM_DIR, name)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(descriptor, size)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(descriptor)
    return name


def _write(
    path: str,
    size: int,
    klines_by_symbol: Mapping[str, Mapping[str, Klines]],
    layout: dict[str, dict[str, list[int]]],
) -> None:
    """Copy every series into the segment. The worker keeps no mapping of it: it never reads it back."""
    descriptor = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        # Populated in one call: cheaper than a page fault per 4 KiB while the series are copied.
        segment = mmap.mmap(descriptor, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
    finally:
        os.close(descriptor)
    with segment:
        for symbol, by_timeframe in klines_by_symbol.items():
            for timeframe, series in by_timeframe.items():
                offset, count, _ = layout[symbol][timeframe]
                _write_series(segment, offset, count, series)


def _write_series(segment: mmap.mmap, offset: int, count: int, series: Klines) -> None:
    # Views of the mapping that die on return: a live one would keep the mapping from closing.
    np.ndarray((count,), np.int64, segment, offset)[:] = series.open_time
    values = np.ndarray((5, count), np.float64, segment, offset + _ITEM_BYTES * count)
    for row, array in enumerate((series.open, series.high, series.low, series.close, series.volume)):
        values[row] = array


def spare_names() -> list[str]:
    """The closed segments kept for the next snapshots."""
    return list(_spare)


@atexit.register
def _remove_spares() -> None:
    while _spare:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(_SHM_DIR, _spare.pop()))


def _remove_orphans() -> None:
    """Once per process: remove segments left by workers that died before closing them (SIGKILL, OOM)."""
    global _swept_for_pid  # noqa: PLW0603 (once per process, and again in a forked child)
    if _swept_for_pid == os.getpid():
        return
    _swept_for_pid = os.getpid()
    for name in os.listdir(_SHM_DIR):
        if not name.startswith(_PREFIX):
            continue
        pid = name.removeprefix(_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError, PermissionError):
                os.unlink(os.path.join(_SHM_DIR, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


class SnapshotReader:
    """A sandbox process's read-only view of one snapshot (built from its index)."""

    def __init__(self, index: Mapping[str, Any]) -> None:
        self.generation = int(index["generation"])
        self.name = name = str(index["name"])
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
        # Helper results for this snapshot's series (worker.sandbox.memo), and each (program key, deadline,
        # symbol)'s check result for traders running identical code: dropped with the snapshot.
        self.memo: dict[tuple[Any, ...], Any] = {}
        self.results: dict[tuple[str, float, str], tuple[int, str | None]] = {}

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
