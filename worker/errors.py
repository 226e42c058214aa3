"""The worker's one exception tree, arranged by what the caller should do.

    WorkerError
    ├── TransientError        retry with backoff (network blips, 5xx, timeouts)
    │   └── RateLimited       back off for at least `retry_after_secs`
    ├── OrderRejected         do not retry; record it (the venue said no)
    ├── SignalError           the trader's own code failed; mark that run (or the trader) failed
    ├── ConfigError           stop: the worker cannot run as configured
    └── InvariantViolation    stop: our own state is inconsistent

Adapters convert vendor errors at the boundary (`raise TransientError(...) from error`) and name the ids
involved in the message.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base of every error the worker raises on purpose."""


class TransientError(WorkerError):
    """Worth retrying: the same call may succeed later."""


class RateLimited(TransientError):
    """The other side asked us to slow down."""

    def __init__(self, message: str, retry_after_secs: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_secs = retry_after_secs


class OrderRejected(WorkerError):
    """The venue refused an order; retrying the same order will not help."""


class SignalError(WorkerError):
    """A trader's signal code failed (compile error, exception, timeout, resource limit)."""


class ConfigError(WorkerError):
    """The configuration is missing or invalid; the message names the setting."""


class InvariantViolation(WorkerError):
    """Our own state broke a rule it must keep; stop rather than trade on it."""
