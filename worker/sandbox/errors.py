"""The sandbox's errors: signal code that cannot run (compile time) and code that was stopped (run time)."""

from __future__ import annotations

from worker.errors import SignalError


class SignalCodeError(SignalError):
    """The signal code was rejected before it ran: a syntax error or a construct the sandbox forbids.

    `line` is the 1-based source line (None when the problem is the code as a whole); `reason` is the
    message without the line, written for the person who owns the trader.
    """

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)


class SignalRuntimeError(SignalError):
    """A trader's code was stopped while it ran (deadline, memory, recursion, crash); its process was
    replaced and the trader must not run again until its code changes."""

    def __init__(self, trader_id: str | None, reason: str) -> None:
        self.trader_id = trader_id
        self.reason = reason
        super().__init__(f"trader {trader_id}: {reason}" if trader_id else reason)
