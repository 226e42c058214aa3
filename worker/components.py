"""What every long-running part of the worker looks like to the app: a name, a state, run and pause."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

# How long a part may take to connect before /health calls it degraded rather than starting.
START_GRACE_SECS: Final = 60.0


class ComponentState(StrEnum):
    """Lifecycle of a component, as /health reports it."""

    STARTING = "starting"
    RUNNING = "running"
    DEGRADED = "degraded"
    STOPPED = "stopped"
    FAILED = "failed"


HEALTHY_STATES = frozenset({ComponentState.STARTING, ComponentState.RUNNING})


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What the worker leaves behind when it stops: the seed's final-state counts plus component states."""

    open_positions: int
    watching_signals: int
    components: dict[str, str]


class Component(Protocol):
    """A part of the worker run by the app under its TaskGroup."""

    name: str

    def state(self) -> ComponentState:
        """The component's current state (cheap; called by /health)."""
        ...

    async def run(self) -> None:
        """Do the work until cancelled; transient failures are handled inside, not raised."""
        ...

    async def prepare_shutdown(self) -> None:
        """Stop taking new work and finish what is in flight (called before the app cancels `run`)."""
        ...
