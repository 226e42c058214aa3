"""The stack's own Postgres 15 cluster: create it, start and stop it, connect to it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from devstack.config import StackConfig
from devstack.errors import StackError
from devstack.processes import ProcessRecord, ProcessRegistry
from devstack.service_dirs import remove_writable_dir, writable_dir

PG_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
BOOTSTRAP_SQL = Path(__file__).with_name("bootstrap.sql")
PLATFORM_OWNER = "supabase_admin"  # owns auth, realtime and graphql_public once bootstrap.sql ran
SERVICE_NAME = "postgres"

# Logical decoding for Realtime and pg_cron in the `postgres` database. Commits are synchronous (the default),
# as on hosted Supabase: logical decoding reads only flushed WAL, so an async commit reaches Realtime's
# subscribers up to a WAL-writer round later. Written into postgresql.conf at every start.
_SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "max_worker_processes": "16",
    "shared_preload_libraries": "'pg_cron'",
    "cron.database_name": "'postgres'",
    "cron.use_background_workers": "on",
    "max_connections": "200",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
}


_SETTINGS_MARKER = "\n# trademind devstack\n"


class PostgresError(StackError):
    """The cluster could not be created or started; the message says why and where to look."""


class PostgresCluster:
    """One data directory under the stack's state folder, run by an unprivileged user when we are root."""

    def __init__(self, config: StackConfig, registry: ProcessRegistry) -> None:
        self._config = config
        self._registry = registry

    # Postgres opens these itself, as the service user, so they are given by their resolved path (the
    # cluster folder may be a link to /var/tmp, see service_dirs) and the log lives beside the data.
    @property
    def _root(self) -> Path:
        return self._config.pg_dir.resolve()

    @property
    def data_dir(self) -> Path:
        return self._root / "data"

    @property
    def socket_dir(self) -> Path:
        return self._root / "run"

    @property
    def log_path(self) -> Path:
        return self._root / "postgres.log"

    def is_initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def running(self) -> ProcessRecord | None:
        return self._registry.live(SERVICE_NAME)

    # Lifecycle ------------------------------------------------------------------------------------------
    def initialise(self) -> None:
        """Run initdb with the Supabase CLI's local superuser and password (postgres / postgres)."""
        for binary in ("initdb", "pg_ctl", "postgres"):
            if not (PG_BIN_DIR / binary).exists():
                raise PostgresError(f"{PG_BIN_DIR / binary} is missing: run `make setup`")
        writable_dir(self._config.pg_dir, self._config.postgres_os_user)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        password_file = self._root / "initdb.pw"
        password_file.write_text("postgres\n")
        self.log_path.touch()
        self._hand_to_service_user(self._root)
        try:
            self._run_as_service_user(
                [
                    str(PG_BIN_DIR / "initdb"),
                    "--pgdata",
                    str(self.data_dir),
                    "--username",
                    "postgres",
                    "--pwfile",
                    str(password_file),
                    "--auth-local",
                    "trust",
                    "--auth-host",
                    "scram-sha-256",
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C.UTF-8",
                    "--no-instructions",
                ],
                what="initdb",
            )
        finally:
            password_file.unlink(missing_ok=True)

    def start(self) -> ProcessRecord:
        """Start the postmaster (idempotent) and wait until it accepts connections."""
        if (record := self.running()) is not None:
            return record
        port = self._config.db_port
        self._write_settings()
        self._run_as_service_user(
            [
                str(PG_BIN_DIR / "pg_ctl"),
                "start",
                "--pgdata",
                str(self.data_dir),
                "--log",
                str(self.log_path),
                "--wait",
                "--timeout",
                "60",
                "-o",
                f"-p {port} -k {self.socket_dir}",
            ],
            what="pg_ctl start",
        )
        postmaster_pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        return self._registry.adopt(SERVICE_NAME, postmaster_pid, log_path=self.log_path, port=port)

    def stop(self) -> bool:
        """Fast shutdown by the postmaster's pid: SIGINT, which ends every backend and then the postmaster."""
        return self._registry.stop(SERVICE_NAME, first_signal=signal.SIGINT, timeout_secs=30)

    def destroy(self) -> None:
        """Stop the cluster and delete its data directory."""
        self.stop()
        remove_writable_dir(self._config.pg_dir)

    # Connections ----------------------------------------------------------------------------------------
    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """Connect as the superuser over TCP, as migrations and tests do."""
        return psycopg.connect(
            host="127.0.0.1",
            port=self._config.db_port,
            user="postgres",
            password="postgres",  # noqa: S106 - the Supabase CLI's well-known local password
            dbname=dbname,
            connect_timeout=10,
            **kwargs,
        )

    def wait_until_ready(self, timeout_secs: float = 30.0) -> None:
        _wait_for(lambda: self.connect().close(), timeout_secs, f"Postgres on port {self._config.db_port}")

    # The platform ---------------------------------------------------------------------------------------
    def platform_owner(self) -> str | None:
        """Who owns the `auth` schema: None before bootstrap.sql ran, PLATFORM_OWNER after it."""
        with self.connect(autocommit=True) as conn:
            query = "select nspowner::regrole::text from pg_namespace where nspname = 'auth'"
            row = conn.execute(query).fetchone()
        return None if row is None else str(row[0])

    def apply_bootstrap(self) -> None:
        """Give the `postgres` database what the Supabase image provides (bootstrap.sql), atomically."""
        with self.connect(autocommit=True) as conn, conn.transaction():
            try:
                conn.execute(BOOTSTRAP_SQL.read_bytes())
            except psycopg.Error as error:
                raise PostgresError(f"{BOOTSTRAP_SQL.name}: {error}") from error

    def recreate_database(self) -> None:
        """Drop and create the `postgres` database (a replication slot in it blocks this: stop Realtime)."""
        with self.connect("template1", autocommit=True) as conn:
            conn.execute("drop database if exists postgres with (force)")
            conn.execute("create database postgres")

    # Helpers --------------------------------------------------------------------------------------------
    def _write_settings(self) -> None:
        """Put _SERVER_SETTINGS at the end of postgresql.conf, replacing what an earlier start wrote there."""
        conf_path = self.data_dir / "postgresql.conf"
        initdb_conf = conf_path.read_text().split(_SETTINGS_MARKER, 1)[0]
        settings = "\n".join(f"{key} = {value}" for key, value in _SERVER_SETTINGS.items())
        conf_path.write_text(f"{initdb_conf}{_SETTINGS_MARKER}{settings}\n")

    def _hand_to_service_user(self, path: Path) -> None:
        user = self._config.postgres_os_user
        if user is None:
            return
        paths = [path]
        if path.is_dir():
            path.chmod(0o700)
            for root, dirs, files in os.walk(path):
                paths += [Path(root) / name for name in (*dirs, *files)]
        for owned in paths:
            os.chown(owned, user.pw_uid, user.pw_gid)

    def _run_as_service_user(self, argv: list[str], *, what: str) -> None:
        user = self._config.postgres_os_user
        env = {"PATH": f"{PG_BIN_DIR}:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=env,
            cwd="/",
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            check=False,
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise PostgresError(
                f"{what} failed ({result.returncode}): {' | '.join(detail)}; see {self.log_path}"
            )


def _wait_for(probe: Callable[[], object], timeout_secs: float, what: str) -> None:
    deadline = time.monotonic() + timeout_secs
    while True:
        try:
            probe()
            return
        except Exception as error:
            if time.monotonic() > deadline:
                raise PostgresError(
                    f"{what} did not become ready within {timeout_secs:.0f}s: {error}"
                ) from error
            time.sleep(0.1)
