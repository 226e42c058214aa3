"""The `Klines` value signal code and indicators read: oldest-first numpy arrays of one series."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

KLINE_FIELDS = ("open_time", "open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class Klines:
    """One (symbol, timeframe) series, oldest candle first; `open_time` in Unix ms.

    `closed` says whether the newest candle is final (False while it is still forming). The arrays may be
    read-only views of the live store: copy them before changing anything.
    """

    open_time: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    closed: bool = True

    def __len__(self) -> int:
        return int(self.close.shape[0])

    @classmethod
    def from_arrays(  # noqa: PLR0917 (one argument per kline field)
        cls,
        open_time: npt.ArrayLike,
        open_: npt.ArrayLike,
        high: npt.ArrayLike,
        low: npt.ArrayLike,
        close: npt.ArrayLike,
        volume: npt.ArrayLike,
        *,
        closed: bool = True,
    ) -> Klines:
        """Build a series from array-likes of equal length (copied into int64/float64 arrays)."""
        o, h, lo, c, v = (
            np.asarray(values, dtype=np.float64) for values in (open_, high, low, close, volume)
        )
        times = np.asarray(open_time, dtype=np.int64)
        if times.ndim != 1 or any(array.shape != times.shape for array in (o, h, lo, c, v)):
            raise ValueError("kline arrays must be one-dimensional and of equal length")
        return cls(times, o, h, lo, c, v, closed=closed)
