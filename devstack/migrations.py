"""Bring the database to the repository's schema: platform bootstrap, migrations in order, then the seed.

Migrations follow the Supabase CLI: `supabase/migrations/<version>_<name>.sql`, applied in version order,
each exactly once and in one transaction, and recorded in `supabase_migrations.schema_migrations`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from devstack.errors import StackError

BOOTSTRAP_SQL = Path(__file__).with_name("bootstrap.sql")
_MIGRATION_FILE = re.compile(r"^(?P<version>[0-9]+)_(?P<name>.+)\.sql$")


class MigrationError(StackError):
    """A SQL file failed; the message names the file, the line and Postgres' own words."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path


def discover(migrations_dir: Path) -> list[Migration]:
    """List the migration files in version order, refusing misnamed files and duplicate versions."""
    migrations: dict[str, Migration] = {}
    for path in sorted(migrations_dir.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files must be named <version>_<name>.sql")
        version = match["version"]
        if version in migrations:
            raise MigrationError(f"{path}: version {version} is also used by {migrations[version].path.name}")
        migrations[version] = Migration(version, match["name"], path)
    return [migrations[version] for version in sorted(migrations, key=int)]


def run_sql_file(conn: psycopg.Connection[Any], path: Path) -> None:
    """Execute a whole SQL file in the current transaction, turning a failure into a located error."""
    sql = path.read_text()
    try:
        conn.execute(sql.encode())
    except psycopg.Error as error:
        raise MigrationError(_describe(path, sql, error)) from error


def apply_bootstrap_if_missing(conn: psycopg.Connection[Any]) -> bool:
    """Run the platform bootstrap unless this database already has it (its history table); True if it ran."""
    found = conn.execute("select to_regclass('supabase_migrations.schema_migrations') is not null").fetchone()
    if found and found[0]:
        return False
    with conn.transaction():
        run_sql_file(conn, BOOTSTRAP_SQL)
    return True


def applied_versions(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute("select version from supabase_migrations.schema_migrations").fetchall()
    return {row[0] for row in rows}


def apply_pending(conn: psycopg.Connection[Any], migrations_dir: Path) -> list[Migration]:
    """Apply every migration not yet recorded, each in its own transaction; return those applied."""
    done = applied_versions(conn)
    applied = []
    for migration in discover(migrations_dir):
        if migration.version in done:
            continue
        with conn.transaction():
            run_sql_file(conn, migration.path)
            conn.execute(
                "insert into supabase_migrations.schema_migrations (version, name, statements) "
                "values (%s, %s, array[%s])",
                (migration.version, migration.name, migration.path.read_text()),
            )
        applied.append(migration)
    if applied:
        conn.execute("notify pgrst, 'reload schema'")
    return applied


def apply_seed(conn: psycopg.Connection[Any], seed_path: Path) -> bool:
    """Run the seed once per database (tracked with its hash, like the CLI); True if it ran now."""
    if not seed_path.exists():
        return False
    digest = hashlib.sha256(seed_path.read_bytes()).hexdigest()
    seeded = conn.execute(
        "select 1 from supabase_migrations.seed_files where path = %s", (seed_path.name,)
    ).fetchone()
    if seeded:
        return False
    with conn.transaction():
        run_sql_file(conn, seed_path)
        conn.execute(
            "insert into supabase_migrations.seed_files (path, hash) values (%s, %s)",
            (seed_path.name, digest),
        )
    return True


def _describe(path: Path, sql: str, error: psycopg.Error) -> str:
    diag = error.diag
    where = ""
    if diag.statement_position:
        line = sql[: int(diag.statement_position)].count("\n") + 1
        where = f":{line}"
    message = diag.message_primary or str(error).strip()
    detail = f" ({diag.message_detail})" if diag.message_detail else ""
    context = f"\n  context: {diag.context.strip()}" if diag.context else ""
    return f"{path.name}{where}: {message}{detail}{context}"
