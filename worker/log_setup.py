"""Logging for the worker: one line per record, RFC 3339 UTC timestamps, key=value fields, secrets masked."""

from __future__ import annotations

import logging
import re
import sys
import time
from datetime import UTC, datetime

MASK = "***"
# Any JWT (header.payload.signature, base64url JSON): machine tokens renewed at run time are not in the list.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class RedactingFormatter(logging.Formatter):
    """`2026-01-01T12:00:00.123Z INFO worker.app message key=value`, with every known secret masked.

    Masking happens on the final text, so a secret is hidden whether it came in the message, an argument or
    an exception's traceback.
    """

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({secret for secret in secrets if len(secret) >= 8}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        timestamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        line = f"{timestamp.replace('+00:00', 'Z')} {record.levelname} {record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self.mask(line)

    def mask(self, text: str) -> str:
        """`text` with every known secret, and any JWT, replaced by the mask."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        text = _JWT.sub(MASK, text)
        return text


def configure_logging(level: str, secrets: list[str]) -> None:
    """Send every log record to stderr through the redacting formatter (called once, at start-up)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter stays at warning unless we debug.
    for noisy in ("httpx", "httpcore", "websockets", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class LogOnce:
    """Log a recurring message at most once per `interval_secs` per key (e.g. a malformed message stream)."""

    def __init__(self, logger: logging.Logger, interval_secs: float = 60.0) -> None:
        self._logger = logger
        self._interval_secs = interval_secs
        self._last_logged: dict[str, float] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_logged.get(key, -self._interval_secs) >= self._interval_secs:
            self._last_logged[key] = now
            self._logger.warning(message, *args)
