"""Faults the tests switch on: rejected requests (429/418), slow replies, stalled or held streams, dropped
sockets."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Faults:
    """The simulator's current fault settings (all off by default)."""

    reject_status: int | None = None  # 429 or 418 for every REST call while set
    reject_remaining: int = 0  # how many more calls to reject; < 0 means until cleared
    retry_after_secs: int = 1
    delay_secs: float = 0.0  # added before every REST reply
    stalled_streams: set[str] = field(default_factory=set)  # stream names, or "*" for every stream
    # Held streams send nothing and lose nothing: candles closed while held are sent when released (a
    # stalled stream's are lost). A test stepping a paused market uses it to order what a worker learns.
    held_streams: set[str] = field(default_factory=set)
    drop_every_secs: float | None = None  # drop every socket this often

    def take_rejection(self) -> int | None:
        """The status to reject this request with, if a rejection is armed (and count it)."""
        if self.reject_status is None:
            return None
        if self.reject_remaining == 0:
            self.reject_status = None
            return None
        if self.reject_remaining > 0:
            self.reject_remaining -= 1
        return self.reject_status

    def is_stalled(self, stream: str) -> bool:
        return "*" in self.stalled_streams or stream in self.stalled_streams

    def is_held(self, stream: str) -> bool:
        return "*" in self.held_streams or stream in self.held_streams

    def update(self, settings: dict[str, object]) -> None:
        """Apply a control request: only the keys present change; null switches a fault off."""
        if "reject_status" in settings:
            status = settings["reject_status"]
            if status not in (None, 429, 418):
                raise ValueError("reject_status must be 429, 418 or null")
            self.reject_status = status if isinstance(status, int) else None
            count = settings.get("reject_count", -1)
            self.reject_remaining = int(count) if isinstance(count, int) else -1
        if "retry_after_secs" in settings:
            self.retry_after_secs = int(settings["retry_after_secs"])  # type: ignore[call-overload]
        if "delay_ms" in settings:
            delay = settings["delay_ms"]
            self.delay_secs = float(delay) / 1000 if isinstance(delay, int | float) else 0.0
        if "stall_streams" in settings:
            streams = settings["stall_streams"]
            self.stalled_streams = {str(name) for name in streams} if isinstance(streams, list) else set()
        if "hold_streams" in settings:
            streams = settings["hold_streams"]
            self.held_streams = {str(name) for name in streams} if isinstance(streams, list) else set()
        if "drop_every_secs" in settings:
            every = settings["drop_every_secs"]
            self.drop_every_secs = float(every) if isinstance(every, int | float) and every > 0 else None

    def as_dict(self) -> dict[str, object]:
        return {
            "reject_status": self.reject_status,
            "reject_remaining": self.reject_remaining,
            "retry_after_secs": self.retry_after_secs,
            "delay_ms": self.delay_secs * 1000,
            "stall_streams": sorted(self.stalled_streams),
            "hold_streams": sorted(self.held_streams),
            "drop_every_secs": self.drop_every_secs,
        }
