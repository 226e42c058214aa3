"""Test-controlled faults: machines that never start or never get healthy, broken images, a slow API, 429s.

Faults are installed with `POST /_control/faults` and matched against the machine a call is about (its id,
image and metadata), so parallel tests that use different machines or users never see each other's faults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class FaultKind(StrEnum):
    NEVER_START = "never_start"  # the machine stays `starting`: its process is never launched
    # The version it hits runs but cannot reach Supabase (its restarts too), so /health never passes.
    UNHEALTHY = "unhealthy"
    BROKEN_IMAGE = "broken_image"  # every machine on `image` crashes as it boots (exit 1), until cleared
    SLOW_API = "slow_api"  # API calls answer after `delayMs`
    RATE_LIMIT = "rate_limit"  # API calls answer 429


# Faults that change how a machine runs, and faults that change how the API answers.
MACHINE_FAULTS = frozenset({FaultKind.NEVER_START, FaultKind.UNHEALTHY, FaultKind.BROKEN_IMAGE})
API_FAULTS = frozenset({FaultKind.SLOW_API, FaultKind.RATE_LIMIT})


class FaultError(ValueError):
    """A fault definition the control endpoint refuses."""


@dataclass(slots=True)
class Fault:
    """One fault; `remaining` None means it applies until cleared."""

    kind: FaultKind
    machine_id: str | None = None
    image: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    remaining: int | None = None
    delay_ms: int = 0

    @classmethod
    def parse(cls, raw: object) -> Fault:
        if not isinstance(raw, dict):
            raise FaultError(f"a fault must be an object, was {raw!r}")
        unknown = set(raw) - {"kind", "machineId", "image", "metadata", "count", "delayMs"}
        if unknown:
            raise FaultError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        try:
            kind = FaultKind(str(raw.get("kind")))
        except ValueError:
            kinds = ", ".join(FaultKind)
            raise FaultError(f"unknown fault kind {raw.get('kind')!r}; kinds: {kinds}") from None
        metadata = raw.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise FaultError("metadata must be an object of strings")
        count = raw.get("count")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise FaultError("count must be a positive integer")
        delay_ms = raw.get("delayMs", 1000 if kind is FaultKind.SLOW_API else 0)
        if not isinstance(delay_ms, int) or not 0 <= delay_ms <= 120_000:
            raise FaultError("delayMs must be an integer between 0 and 120000")
        if kind is FaultKind.BROKEN_IMAGE and (not isinstance(raw.get("image"), str) or count is not None):
            raise FaultError("a broken_image fault names its image and has no count: the image stays broken")
        if count is None and kind is FaultKind.RATE_LIMIT:
            count = 1  # an endless 429 would make every client give up; ask for more explicitly
        return cls(kind, raw.get("machineId"), raw.get("image"), dict(metadata), count, delay_ms)

    def matches(self, machine_id: str | None, config: Mapping[str, Any] | None) -> bool:
        if self.machine_id is not None and self.machine_id != machine_id:
            return False
        config = config or {}
        if self.image is not None and self.image != config.get("image"):
            return False
        metadata = config.get("metadata") or {}
        return all(metadata.get(key) == value for key, value in self.metadata.items())

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "machineId": self.machine_id,
            "image": self.image,
            "metadata": self.metadata,
            "count": self.remaining,
            "delayMs": self.delay_ms,
        }


class FaultBook:
    """The installed faults; `take` consumes one use of the first match."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, faults: list[Fault]) -> None:
        self._faults.extend(faults)

    def clear(self) -> int:
        cleared = len(self._faults)
        self._faults.clear()
        return cleared

    def listing(self) -> list[dict[str, Any]]:
        return [fault.as_json() for fault in self._faults]

    def take(
        self, kinds: frozenset[FaultKind], machine_id: str | None, config: Mapping[str, Any] | None
    ) -> Fault | None:
        for fault in self._faults:
            if fault.kind in kinds and fault.matches(machine_id, config):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                return fault
        return None
