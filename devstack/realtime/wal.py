"""Changes from the WAL: a logical slot with wal2json, streamed by pg_recvlogical.

Why pg_recvlogical rather than polling `pg_logical_slot_get_changes` (what the real server does every
100 ms): the walsender pushes each change as soon as its commit is flushed, so latency is the flush delay
alone, and an idle server costs nothing. psycopg 3 has no replication protocol, so the stream runs in a
child process and is read line by line (wal2json format 2: one JSON object per change).

The slot is persistent (pg_recvlogical cannot use a temporary one), so it is owned by name: each start
ends whatever still holds it, drops it and creates it afresh (what was committed while no server ran is
not replayed, as with the real server's temporary slot), and a clean stop drops it. The child dies with
us (PR_SET_PDEATHSIG) so a killed server does not leave the slot held.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_MAX_LINE_BYTES = 64 * 1024 * 1024
_ACTIONS = {"I": "INSERT", "U": "UPDATE", "D": "DELETE"}
_WAL2JSON_OPTIONS = {
    "format-version": "2",
    "include-timestamp": "1",
    "include-type-oids": "1",
    "include-pk": "1",
    "include-xids": "1",
    "include-transaction": "0",
}


class WalStreamError(RuntimeError):
    """pg_recvlogical stopped; the message carries its last words."""


@dataclass(frozen=True, slots=True)
class WalChange:
    """One row change as wal2json saw it: images map column name to wal2json's value (text or JSON scalar)."""

    action: str  # INSERT | UPDATE | DELETE
    schema: str
    table: str
    commit_timestamp: str  # YYYY-MM-DDTHH:MI:SS.MSZ, as the real server formats it
    xid: int  # the committed (top-level) transaction, 32 bits as the WAL holds it
    new: dict[str, Any] | None
    old: dict[str, Any] | None
    type_oids: dict[str, int]
    pk: tuple[str, ...]
    received_monotonic: float


def _image(columns: list[dict[str, Any]] | None, type_oids: dict[str, int]) -> dict[str, Any] | None:
    if columns is None:
        return None
    image = {}
    for column in columns:
        image[column["name"]] = column.get("value")
        if "typeoid" in column:
            type_oids[column["name"]] = column["typeoid"]
    return image


def format_commit_timestamp(wal2json_timestamp: str) -> str:
    moment = datetime.fromisoformat(wal2json_timestamp).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_line(line: bytes, received_monotonic: float) -> WalChange | None:
    """Parse one wal2json format-2 line; None for what is not a row change (truncate, messages)."""
    message = json.loads(line)
    action = _ACTIONS.get(message.get("action", ""))
    if action is None:
        return None
    type_oids: dict[str, int] = {}
    return WalChange(
        action=action,
        schema=message["schema"],
        table=message["table"],
        commit_timestamp=format_commit_timestamp(message["timestamp"]),
        xid=int(message["xid"]),
        new=_image(message.get("columns"), type_oids),
        old=_image(message.get("identity"), type_oids),
        type_oids=type_oids,
        pk=tuple(column["name"] for column in message.get("pk", [])),
        received_monotonic=received_monotonic,
    )


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to end it when the server dies.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class DatabaseAddress:
    host: str
    port: int
    user: str
    password: str
    dbname: str

    def connect_kwargs(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": self.dbname,
            "connect_timeout": 10,
        }


class WalStream:
    """Own one replication slot and stream its changes."""

    def __init__(self, address: DatabaseAddress, slot_name: str, recvlogical_bin: Path) -> None:
        self._address = address
        self.slot_name = slot_name
        self._bin = recvlogical_bin

    async def recreate_slot(self) -> None:
        """End whoever holds our slot, drop it, and create it again (changes from now on are kept)."""
        async with await psycopg.AsyncConnection.connect(
            **self._address.connect_kwargs(), autocommit=True
        ) as conn:
            await self._drop(conn)
            await conn.execute("select pg_create_logical_replication_slot(%s, 'wal2json')", (self.slot_name,))

    async def drop_orphaned_slots(self, prefix: str) -> list[str]:
        """Drop idle slots named `<prefix><port>` whose port has no server: left by a killed server."""
        dropped = []
        async with await psycopg.AsyncConnection.connect(
            **self._address.connect_kwargs(), autocommit=True
        ) as conn:
            rows = await (
                await conn.execute(
                    "select slot_name from pg_replication_slots where not active and slot_name like %s",
                    (prefix.replace("_", r"\_") + "%",),
                )
            ).fetchall()
            for (name,) in rows:
                port = name.removeprefix(prefix)
                if name == self.slot_name or not port.isdigit() or await _listening(int(port)):
                    continue
                with contextlib.suppress(psycopg.errors.ObjectInUse, psycopg.errors.UndefinedObject):
                    await conn.execute("select pg_drop_replication_slot(%s)", (name,))
                    dropped.append(name)
        return dropped

    async def drop_slot(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            **self._address.connect_kwargs(), autocommit=True
        ) as conn:
            await self._drop(conn)

    async def _drop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        for _ in range(50):
            row = await (
                await conn.execute(
                    "select active_pid from pg_replication_slots where slot_name = %s", (self.slot_name,)
                )
            ).fetchone()
            if row is None:
                return
            if row[0] is not None:
                # A previous server's pg_recvlogical (or walsender) still holds it.
                await conn.execute("select pg_terminate_backend(%s)", (row[0],))
                await asyncio.sleep(0.1)
                continue
            try:
                await conn.execute("select pg_drop_replication_slot(%s)", (self.slot_name,))
                return
            except psycopg.errors.ObjectInUse:
                await asyncio.sleep(0.1)
        raise WalStreamError(f"replication slot {self.slot_name} is still in use after 5s")

    async def stream(self, on_change: Callable[[WalChange], Awaitable[None]]) -> None:
        """Run pg_recvlogical on the slot and hand every row change to `on_change`, until it exits."""
        address = self._address
        argv = [
            str(self._bin),
            "--dbname", f"host={address.host} port={address.port} user={address.user} "
                        f"dbname={address.dbname}",
            "--slot", self.slot_name,
            "--start",
            "--no-loop",
            "--file", "-",
            "--fsync-interval", "0",
            "--status-interval", "1",
        ]  # fmt: skip
        for name, value in _WAL2JSON_OPTIONS.items():
            argv += ["--option", f"{name}={value}"]
        env = {
            "PGPASSWORD": address.password,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C.UTF-8",
        }
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            limit=_MAX_LINE_BYTES,
            preexec_fn=_die_with_parent,
        )
        assert process.stdout is not None and process.stderr is not None
        logger.info("wal stream started slot=%s pid=%d", self.slot_name, process.pid)
        try:
            while line := await process.stdout.readline():
                try:
                    change = parse_line(line, time.monotonic())
                except (ValueError, KeyError) as error:
                    logger.error("skipping an unreadable wal2json line: %s", error)
                    continue
                if change is not None:
                    await on_change(change)  # waits while the dispatcher is behind
            stderr = (await process.stderr.read()).decode(errors="replace").strip()
            code = await process.wait()
            raise WalStreamError(f"pg_recvlogical exited with {code}: {stderr[-500:] or '(no output)'}")
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), timeout=5)
                except TimeoutError:
                    process.kill()
                    await process.wait()
