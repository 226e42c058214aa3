"""The machine's log lines in `machine_logs`, through record_machine_logs() (a retried batch counts once)."""

from __future__ import annotations

from worker.db.client import Database
from worker.domain.logs import LogLine


class LogRows:
    """Where the log shipper sends its batches (the shipper decides how to retry: one attempt each)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, lines: list[LogLine]) -> int:
        """Store a batch; returns how many of its lines were new."""
        body = {"lines": [line.as_row() for line in lines]}
        return int(await self._db.rpc("record_machine_logs", body, what="record_machine_logs()", attempts=1))
