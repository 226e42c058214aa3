"""The replay clock: market time that runs at real time, faster (e.g. 60x), or stands still for tests."""

from __future__ import annotations

import time
from collections.abc import Callable


class ReplayClock:
    """Market time in Unix ms: `start_ms` plus wall time elapsed since start, times `speed`.

    Paused, it moves only through `advance_ms` / `jump_to`. It never runs past `end_ms` (the end of the
    recordings), where the market simply stops.
    """

    def __init__(
        self,
        start_ms: int,
        *,
        speed: float = 60.0,
        end_ms: int | None = None,
        paused: bool = False,
        wall_secs: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self._wall_secs = wall_secs
        self._anchor_market_ms = float(start_ms)
        self._anchor_wall_secs = wall_secs()
        self._speed = speed
        self._paused = paused
        self.end_ms = end_ms

    def now_ms(self) -> int:
        market_ms = self._anchor_market_ms
        if not self._paused:
            market_ms += (self._wall_secs() - self._anchor_wall_secs) * 1000.0 * self._speed
        if self.end_ms is not None:
            market_ms = min(market_ms, float(self.end_ms))
        return int(market_ms)

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def paused(self) -> bool:
        return self._paused

    def _rebase(self) -> None:
        self._anchor_market_ms = float(self.now_ms())
        self._anchor_wall_secs = self._wall_secs()

    def set_speed(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self._rebase()
        self._speed = speed

    def pause(self) -> None:
        self._rebase()
        self._paused = True

    def resume(self) -> None:
        self._rebase()
        self._paused = False

    def jump_to(self, market_ms: int) -> None:
        """Set market time (forwards only: the market never goes back)."""
        if market_ms < self.now_ms():
            raise ValueError("the replay clock only moves forwards")
        self._anchor_market_ms = float(market_ms)
        self._anchor_wall_secs = self._wall_secs()

    def advance_ms(self, delta_ms: int) -> None:
        self.jump_to(self.now_ms() + delta_ms)
