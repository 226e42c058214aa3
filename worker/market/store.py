"""The kline store: fixed-size numpy buffers per (symbol, timeframe) holding the newest candles.

Each series lives in one flat buffer (header, open times, then the five OHLCV rows) that the caller may
provide, e.g. a `multiprocessing.shared_memory` block, so another process can map the same candles without
copying. Oldest candle first; a forming candle is updated in place, a new one appended (the oldest falls off
when full). Nothing is allocated per message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from enum import StrEnum

import numpy as np

from worker.domain.intervals import INTERVAL_MS
from worker.market.klines import Klines

DEFAULT_CAPACITY = 1000
_HEADER_WORDS = 4  # count, last candle closed (0/1), last change (Unix ms), version
_COUNT, _CLOSED, _CHANGED_MS, _VERSION = range(_HEADER_WORDS)
_VALUE_ROWS = 5  # open, high, low, close, volume


# Anything numpy can wrap without copying: bytearray, memoryview (e.g. SharedMemory.buf), mmap, ndarray.
Buffer = bytearray | memoryview | np.ndarray
Allocator = Callable[[int], Buffer]


class Upsert(StrEnum):
    """What an update did to a series (the feed backfills after GAP and UNCONFIRMED)."""

    UPDATED = "updated"  # the newest candle changed in place
    APPENDED = "appended"  # a new candle right after a closed one
    UNCONFIRMED = "unconfirmed"  # a new candle, but the previous one never arrived closed
    GAP = "gap"  # a new candle, with candles missing before it
    REPLACED = "replaced"  # an older candle was corrected
    INSERTED = "inserted"  # a missing older candle was filled in
    STALE = "stale"  # ignored: an in-progress update older than what we hold


def series_nbytes(capacity: int) -> int:
    """Bytes one series needs in a caller-provided buffer."""
    return 8 * (_HEADER_WORDS + capacity * (1 + _VALUE_ROWS))


class KlineSeries:
    """The newest `capacity` candles of one (symbol, interval), in a flat buffer."""

    __slots__ = ("_header", "_times", "_values", "capacity", "interval", "interval_ms", "symbol")

    def __init__(
        self, symbol: str, interval: str, capacity: int = DEFAULT_CAPACITY, buffer: Buffer | None = None
    ) -> None:
        if interval not in INTERVAL_MS:
            raise ValueError(f"unknown interval {interval!r}; expected one of {', '.join(INTERVAL_MS)}")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.symbol, self.interval, self.capacity = symbol, interval, capacity
        self.interval_ms = INTERVAL_MS[interval]
        nbytes = series_nbytes(capacity)
        raw = np.zeros(nbytes, dtype=np.uint8) if buffer is None else np.frombuffer(buffer, dtype=np.uint8)
        if raw.nbytes < nbytes:
            raise ValueError(f"buffer too small: {raw.nbytes} bytes, need {nbytes}")
        self._header = np.ndarray((_HEADER_WORDS,), dtype=np.int64, buffer=raw)
        self._times = np.ndarray((capacity,), dtype=np.int64, buffer=raw, offset=8 * _HEADER_WORDS)
        self._values = np.ndarray(
            (_VALUE_ROWS, capacity), dtype=np.float64, buffer=raw, offset=8 * (_HEADER_WORDS + capacity)
        )

    # Reading ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._header[_COUNT])

    @property
    def last_open_time(self) -> int | None:
        count = len(self)
        return int(self._times[count - 1]) if count else None

    @property
    def last_closed(self) -> bool:
        """Whether the newest candle is final."""
        return bool(self._header[_CLOSED])

    @property
    def changed_at_ms(self) -> int:
        """When the series last changed (Unix ms, 0 if never)."""
        return int(self._header[_CHANGED_MS])

    @property
    def version(self) -> int:
        """Incremented on every change (readers in other processes can detect a torn read)."""
        return int(self._header[_VERSION])

    def klines(self) -> Klines:
        """Read-only views of the candles, oldest first (no copy; valid until the next update)."""
        count = len(self)
        times = self._times[:count].view()
        o, h, lo, c, v = (self._values[row, :count].view() for row in range(_VALUE_ROWS))
        for view in (times, o, h, lo, c, v):
            view.flags.writeable = False
        return Klines(times, o, h, lo, c, v, closed=self.last_closed)

    # Writing ---------------------------------------------------------------------------------------
    def upsert(  # noqa: PLR0917 (one argument per kline field)
        self,
        open_time: int,
        open_: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        *,
        closed: bool,
        now_ms: int | None = None,
    ) -> Upsert:
        """Apply one candle (in progress or final); see `Upsert` for the outcomes."""
        count = len(self)
        last = int(self._times[count - 1]) if count else None
        if last is None or open_time > last:
            if last is None or open_time == last + self.interval_ms:
                result = Upsert.APPENDED if last is None or self.last_closed else Upsert.UNCONFIRMED
            else:
                result = Upsert.GAP
            index = self._make_room_at_end(count)
            self._header[_CLOSED] = closed
        elif open_time == last:
            if self.last_closed and not closed:
                return Upsert.STALE
            index, result = count - 1, Upsert.UPDATED
            self._header[_CLOSED] = closed
        else:
            if not closed:
                return Upsert.STALE
            found = int(np.searchsorted(self._times[:count], open_time))
            if self._times[found] == open_time:
                index, result = found, Upsert.REPLACED
            else:
                placed = self._make_room_before(found, count)
                if placed is None:
                    return Upsert.STALE  # older than everything a full buffer keeps
                index, result = placed, Upsert.INSERTED
        self._times[index] = open_time
        values = self._values
        values[0, index], values[1, index], values[2, index] = open_, high, low
        values[3, index], values[4, index] = close, volume
        self._header[_CHANGED_MS] = now_ms if now_ms is not None else int(time.time() * 1000)
        self._header[_VERSION] += 1
        return result

    def _make_room_at_end(self, count: int) -> int:
        if count < self.capacity:
            self._header[_COUNT] = count + 1
            return count
        # Full: one memmove of the window (new candles arrive once per interval, updates are in place).
        self._times[:-1] = self._times[1:]
        self._values[:, :-1] = self._values[:, 1:]
        return count - 1

    def _make_room_before(self, index: int, count: int) -> int | None:
        """Open a slot for a candle that belongs before position `index`; return the slot."""
        if count < self.capacity:
            self._times[index + 1 : count + 1] = self._times[index:count]
            self._values[:, index + 1 : count + 1] = self._values[:, index:count]
            self._header[_COUNT] = count + 1
            return index
        if index == 0:
            return None
        self._times[: index - 1] = self._times[1:index]
        self._values[:, : index - 1] = self._values[:, 1:index]
        return index - 1


class KlineStore:
    """Every series the worker follows, created on first use; memory is symbols x timeframes x capacity."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, allocate: Allocator | None = None) -> None:
        self.capacity = capacity
        self._allocate = allocate
        self._series: dict[tuple[str, str], KlineSeries] = {}

    def series(self, symbol: str, interval: str) -> KlineSeries:
        key = (symbol, interval)
        found = self._series.get(key)
        if found is None:
            buffer = self._allocate(series_nbytes(self.capacity)) if self._allocate else None
            found = self._series[key] = KlineSeries(symbol, interval, self.capacity, buffer)
        return found

    def get(self, symbol: str, interval: str) -> KlineSeries | None:
        return self._series.get((symbol, interval))

    def klines(self, symbol: str, interval: str) -> Klines | None:
        """The candles of one series as read-only views, or None if the store has none."""
        found = self._series.get((symbol, interval))
        return found.klines() if found is not None else None

    def drop(self, symbol: str, interval: str) -> None:
        self._series.pop((symbol, interval), None)

    def __iter__(self) -> Iterator[KlineSeries]:
        return iter(list(self._series.values()))

    def keys(self) -> list[tuple[str, str]]:
        """The (symbol, interval) of every series held (what the feed follows)."""
        return [(series.symbol, series.interval) for series in self._series.values()]

    def __len__(self) -> int:
        return len(self._series)
