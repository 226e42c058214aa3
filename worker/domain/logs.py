"""One log line as the machine ships it (a `machine_logs` row; levels mirror public.log_level)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from worker.domain.enums import LogLevel

MAX_MESSAGE_CHARS: Final = 4000  # machine_logs_message_length


@dataclass(frozen=True, slots=True)
class LogLine:
    id: uuid.UUID  # made by the worker, so a retried batch is recorded once
    logged_at: datetime  # UTC
    level: LogLevel
    logger: str
    message: str

    def as_row(self) -> dict[str, str]:
        return {
            "id": str(self.id),
            "logged_at": self.logged_at.isoformat(),
            "level": self.level.value,
            "logger": self.logger[:200],
            "message": self.message[:MAX_MESSAGE_CHARS],
        }
