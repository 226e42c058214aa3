"""This machine's own rows: the schema it was built for, its `fly_machines` heartbeat, its user's account, and
the outside services' health as it sees them."""

from __future__ import annotations

from typing import Final

from worker.db.client import Database, Refused
from worker.domain.enums import MachineStatus
from worker.errors import ConfigError

# The schema versions this build of the worker understands (public.schema_version()).
SUPPORTED_SCHEMA_VERSIONS: Final = frozenset({2})
_NO_MACHINE_ROW: Final = "P0002"


def check_schema_version(version: int) -> None:
    """Raises ConfigError unless this worker was built for `version`."""
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        supported = ", ".join(str(v) for v in sorted(SUPPORTED_SCHEMA_VERSIONS))
        raise ConfigError(
            f"database schema version {version} is not supported by this worker (supports {supported})"
        )


class MachineRows:
    """The machine's identity in the database (the callers decide how to retry these: one attempt each)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def schema_version(self) -> int:
        return int(await self._db.rpc("schema_version", {}, attempts=1))

    async def record_heartbeat(self, status: MachineStatus, version: str) -> MachineStatus:
        """Refresh this machine's row (database clock); returns the status now recorded.

        Raises:
            ConfigError: the token's machine has no row (it was destroyed, or the token is someone else's).
        """
        body = {"status": status.value, "version": version}
        try:
            result = await self._db.rpc("record_machine_heartbeat", body, attempts=1)
        except Refused as error:
            if error.code == _NO_MACHINE_ROW:
                raise ConfigError(str(error)) from error
            raise
        return MachineStatus(result["status"])

    async def report_service_health(self, service: str, ok: bool, detail: str | None) -> None:
        """One outcome of an outside service as this machine saw it (the database judges outages)."""
        body = {"service": service, "ok": ok, "detail": detail}
        await self._db.rpc("report_service_health", body, attempts=1)

    async def real_trading_enabled(self) -> bool:
        """Whether the user has turned real trading on (the venue is chosen from this and the settings)."""
        rows = await self._db.select("users", {"select": "real_trading_enabled"}, what="read users")
        if not rows:
            raise ConfigError("the machine token's user has no users row")
        return bool(rows[0].get("real_trading_enabled"))
